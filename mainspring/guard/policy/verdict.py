"""What a policy rule decides about one effect, and the errors of the policy layer.

A rule returns ``None`` (no opinion) or a :class:`Verdict`, made with :func:`allow`,
:func:`deny`, :func:`approve` or :func:`rewrite`. The policy combines every verdict of
every rule that applies: a deny wins, then a request for approval, then rewrites (applied
in order), then allows; with no verdict at all the policy's default decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ...errors import MainspringError

Outcome: TypeAlias = Literal["allow", "deny", "approve", "rewrite"]
OUTCOMES: Final = ("allow", "deny", "approve", "rewrite")


class PolicyError(MainspringError):
    """A policy that cannot be loaded or run: the message names the file or rule and the fix."""


class Verdict(msgspec.Struct, frozen=True):
    """One rule's decision. ``rule`` (its id) is filled in by the policy; ``explicit`` says
    the rule names the effect it decided (only such an allow lets a dangerous tool run)."""

    outcome: Outcome
    reason: str = ""
    args: Mapping[str, Any] | None = None  # rewrite: the new arguments, whole
    redact: tuple[str, ...] = ()  # rewrite: argument paths ("card.number") to mask
    rule: str = ""
    explicit: bool = False


def allow(reason: str = "") -> Verdict:
    """Let the call go."""
    return Verdict("allow", reason)


def deny(reason: str) -> Verdict:
    """Refuse the call; ``reason`` goes back to the caller (an agent's model reads it)."""
    return Verdict("deny", reason)


def approve(reason: str) -> Verdict:
    """Ask a person first: the run parks on a durable interrupt showing the call."""
    return Verdict("approve", reason)


def rewrite(
    args: Mapping[str, Any] | None = None, *, redact: Iterable[str] = (), reason: str = ""
) -> Verdict:
    """Let the call go with other arguments: ``args`` replaces them whole, ``redact`` masks
    the values at the paths given (``"ssn"``, ``"card.number"``)."""
    paths = tuple(redact)
    if args is None and not paths:
        raise PolicyError("rewrite() needs args= (the new arguments) or redact= (paths to mask)")
    return Verdict("rewrite", reason, None if args is None else dict(args), paths)


REDACTED: Final = "[redacted]"


def redacted(args: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """``args`` with the value at each dotted path replaced by ``[redacted]`` (a path that
    is not there is left alone)."""
    out: dict[str, Any] = dict(args)
    for path in paths:
        parts = path.split(".")
        node: Any = out
        for part in parts[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, Mapping):
                node = None
                break
            node[part] = child = dict(child)  # copied on the way down: the caller's is kept
            node = child
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = REDACTED
    return out
