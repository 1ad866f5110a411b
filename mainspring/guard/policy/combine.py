"""How the verdicts of every rule that applies come to one decision (a pure function).

In order: a deny wins (the first, in layer and rule order); a dangerous tool that no
rule naming it allows is denied; then a request for approval; then rewrites, applied in
order; then an allow; with no verdict at all, the policy's default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .verdict import Verdict, redacted


def combine(
    verdicts: Sequence[Verdict], *, dangerous: bool, default: str, tool: str | None
) -> Verdict:
    for v in verdicts:
        if v.outcome == "deny":
            return v
    if dangerous and not any(v.explicit for v in verdicts):
        return Verdict(
            "deny",
            f"tool {tool!r} is marked dangerous and no policy rule that names it allows it",
            rule="dangerous-tools",
        )
    for v in verdicts:
        if v.outcome == "approve":
            return v
    rewrites = [v for v in verdicts if v.outcome == "rewrite"]
    if rewrites:
        first = rewrites[0]
        if len(rewrites) == 1:
            return first
        reason = "; ".join(v.reason for v in rewrites if v.reason)
        rules = ",".join(v.rule for v in rewrites)
        return Verdict("rewrite", reason, None, (), rules, first.explicit)
    for v in verdicts:
        if v.outcome == "allow":
            return v
    return Verdict("allow" if default == "allow" else "deny",
                   "" if default == "allow" else "no policy rule allows it (default deny)",
                   rule="default")  # fmt: skip


def rewritten(args: Mapping[str, Any], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """``args`` after every rewrite among ``verdicts``, in order."""
    out = dict(args)
    for v in verdicts:
        if v.outcome != "rewrite":
            continue
        if v.args is not None:
            out = dict(v.args)
        if v.redact:
            out = redacted(out, v.redact)
    return out
