"""Offline decision cases: a policy checked against what it must decide, with no runtime.

A cases file (YAML or JSON) holds ``cases:``, a list of::

    - name: big refunds are denied        # optional
      tool: refund                        # or name: "model:gpt" with kind: model
      args: {amount: 500}
      tenant: acme                        # optional: user, graph, node, thread, metadata
      dangerous: false                    # the tool's flag (default false)
      history: {"tool:lookup": 3}         # the run's earlier effects by name
      spend: {tokens: 1200}               # what the ledger reports for the run
      expect: deny                        # or {decision: rewrite, rule: mask-ssn, args: {...}}

``mainspring policy test POLICY_PATH CASES_FILE`` runs them and exits non-zero on a failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ...engine.gate import Allow, Approve, Decision, Deny, Effect, Rewrite
from .hook import Policy
from .verdict import OUTCOMES, PolicyError


class CaseResult(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    got: dict[str, Any]
    expected: dict[str, Any]


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The cases of a YAML or JSON file (PolicyError says what is wrong with it)."""
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:  # pragma: no cover - an environment without PyYAML
                raise PolicyError(f"{path}: reading YAML needs PyYAML; pip install pyyaml, "
                                  "or write the cases as JSON") from None  # fmt: skip
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise PolicyError(f"{path}: cannot be read: {exc}") from None
    cases = data.get("cases") if isinstance(data, Mapping) else data
    if not isinstance(cases, list) or not all(isinstance(c, Mapping) for c in cases):
        raise PolicyError(f"{path}: give `cases:`, a list of mappings (see docs/policy.md)")
    for number, case in enumerate(cases, start=1):
        if "expect" not in case or not ("tool" in case or "name" in case):
            raise PolicyError(f"{path}: case {number} needs `expect:` and `tool:` or `name:`")
    return [dict(c) for c in cases]


class _Facts:
    def __init__(self) -> None:
        self.dangerous: set[str] = set()

    def facts(self, name: str) -> dict[str, Any]:
        return {"dangerous": name in self.dangerous}


class _Ledger:
    def __init__(self) -> None:
        self.spend: Mapping[str, Any] = {}

    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float:
        return float(self.spend.get(metric, 0.0))


async def run_cases(
    paths: Sequence[Path], cases: Sequence[Mapping[str, Any]], default: str = "allow"
) -> list[CaseResult]:
    """Decide each case with the policy at ``paths``."""
    facts, ledger = _Facts(), _Ledger()
    policy = Policy(paths, reload_every=None, tools=facts, ledger=ledger, default=default)  # type: ignore[arg-type]
    out = []
    for number, case in enumerate(cases, start=1):
        effect = _effect(number, case)
        if case.get("dangerous") and effect.kind == "tool":
            facts.dangerous.add(effect.name[5:])
        ledger.spend = case.get("spend") or {}
        policy._history.seed(effect.run_id, case.get("history") or {})
        got = _described(await policy.before(effect))
        expected = case["expect"]
        expected = {"decision": expected} if isinstance(expected, str) else dict(expected)
        if expected.get("decision") not in OUTCOMES:
            raise PolicyError(f"case {number}: expect a decision among {', '.join(OUTCOMES)}")
        ok = all(got.get(k) == v for k, v in expected.items())
        out.append(CaseResult(str(case.get("name") or f"case {number}"), ok, got, expected))
        facts.dangerous.clear()
    return out


def _effect(number: int, case: Mapping[str, Any]) -> Effect:
    tool = case.get("tool")
    name = f"tool:{tool}" if tool else str(case["name"])
    kind = str(case.get("kind") or ("tool" if tool else name.partition(":")[0] or "effect"))
    meta = dict(case.get("metadata") or {})
    for field in ("tenant", "user"):
        if case.get(field) is not None:
            meta[field] = case[field]
    return Effect(
        kind, name, dict(case.get("args") or {}), f"case-{number}", f"case-{number}",
        str(case.get("node", "node")), 1, 0, 0, 1, meta, False, case.get("thread"),
        str(case.get("graph", "graph")),
    )  # fmt: skip


def _described(decision: Decision) -> dict[str, Any]:
    basis = dict(getattr(decision, "basis", None) or {})
    out = {"decision": basis.get("decision", "allow"), "rule": basis.get("rule")}
    if isinstance(decision, Deny | Approve):
        out["reason"] = decision.reason
    if isinstance(decision, Rewrite):
        out["args"] = dict(decision.args)
    if isinstance(decision, Allow) and decision.basis is None:
        out["rule"] = None
    return out
