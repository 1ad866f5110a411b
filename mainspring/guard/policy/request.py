"""What a rule sees of one effect: a :class:`Request`.

Built once per effect by the policy hook from the gate's ``Effect``: its kind, name and
arguments; the agent (graph and node); the user and tenant (the run's metadata); the
tool's facts (``dangerous``); the run's history (counts of its earlier effects by name);
and, on demand, the spend a budget ledger reports for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...engine.gate import Effect
from .verdict import PolicyError

Spent = Callable[[Effect, str, str], Awaitable[float]]  # (effect, metric, per) -> amount


class Request:
    """One effect as policy rules read it (attributes; the arguments under ``args``)."""

    __slots__ = (
        "_history",
        "_reads_history",
        "_spent",
        "args",
        "dangerous",
        "effect",
        "graph",
        "kind",
        "name",
        "node",
        "run_id",
        "tenant",
        "thread",
        "tool",
        "user",
    )

    def __init__(
        self,
        effect: Effect,
        *,
        dangerous: bool = False,
        history: Mapping[str, int] | None = None,
        spent: Spent | None = None,
    ) -> None:
        self.effect = effect
        self.kind = effect.kind
        self.name = effect.name
        self.args = effect.args
        self.node = effect.node
        self.graph = effect.graph
        self.run_id = effect.run_id
        self.thread = effect.thread
        meta = effect.metadata
        tenant, user = meta.get("tenant"), meta.get("user")
        self.tenant = None if tenant is None else str(tenant)
        self.user = None if user is None else str(user)
        name = effect.name
        self.tool = name[5:] if effect.kind == "tool" and name.startswith("tool:") else None
        self.dangerous = dangerous
        self._history = history
        self._reads_history = False  # set per rule: only rules that declare it read history
        self._spent = spent

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The run's metadata (``rt.start(..., metadata=...)``)."""
        return self.effect.metadata

    @property
    def history(self) -> Mapping[str, int]:
        """How many effects of each name this run made before this one (those the policy let
        go). Only for rules that declare ``history=True``: the policy then reads a resumed
        run's journal once, so the counts hold across processes."""
        if self._history is None or not self._reads_history:
            raise PolicyError(
                "this rule reads req.history but did not declare it: register it with "
                "@rules.rule(..., history=True)"
            )
        return self._history

    async def spent(self, metric: str = "tokens", per: str = "run") -> float:
        """What the budget ledger counts for this effect's ``per`` scope ("run", "thread",
        "user", "tenant") and ``metric`` ("tokens", "cost", "calls"...): asked of the ledger
        only when a rule calls this. Needs ``Policy(ledger=...)``."""
        if self._spent is None:
            raise PolicyError(
                "a rule asked for the spend but the policy has no budget ledger: give "
                "Policy(ledger=...) the ledger your BudgetGate uses"
            )
        return await self._spent(self.effect, metric, per)

    def __repr__(self) -> str:
        return f"<Request {self.name} tenant={self.tenant!r} user={self.user!r}>"
