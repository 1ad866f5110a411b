"""The budget gate: budgets enforced on the effect gate, before every counted call.

``Runtime(store, gates=[LoopBreaker(), ..., BudgetGate([Budget(...)], ledger)])``.

Before a call, the gate estimates what it will use and reserves that in the ledger
(one atomic check-and-add over every budget the call is under); after it, the
reservation is settled with the usage the call reports (released if it failed with
no usage). When a budget would be passed, its action decides:

* ``stop``: ``Deny`` whose reason starts with "budget" (the node gets an
  ``EffectDeniedError``; :func:`~mainspring.models.budgets.denial_error` turns it into
  the ``BudgetExceededError`` the gateway raises);
* ``fallback``: ``Rewrite`` the call to ``fallback_model``, checked again against
  every other budget (the one that fell back still counts the cheaper calls, but no
  longer refuses them);
* ``ask``: ``Approve`` with the budget's figures as payload, a durable interrupt:
  ``resume(run, True)`` lets that one call go (and it is counted);
* ``warn``: the call goes and is counted; the gate logs a warning, counts it in
  ``gate.warnings`` (by budget), and its after-hook adds the warning as the outcome's
  note, which the journal keeps as an ``effect_decided`` event ("after", "budgets").

Put it last among the before-hooks: a hook after it that denies or answers a call
it has reserved for would leave that reservation counted at its estimate.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ..engine.gate import Approve, Decision, Deny, Effect, Outcome, Rewrite
from .budget_ledger import BudgetLedger, Entry, Refusal, Reservation
from .budget_ledger_memory import MemoryLedger
from .budgets import COUNTED, TIMED, Amounts, Budget, CallEstimate, PriceOf, used

log = logging.getLogger("mainspring.models.budgets")


class _Counter(msgspec.Struct, frozen=True):
    """The budgets that share one counter (same per, on and window), by limit."""

    budgets: tuple[Budget, ...]

    @property
    def first(self) -> Budget:
        return self.budgets[0]

    def enforcing(self, relaxed: frozenset[Budget]) -> Budget | None:
        """The budget whose limit the ledger checks: the lowest that may refuse."""
        for budget in self.budgets:
            if budget.action != "warn" and budget not in relaxed:
                return budget
        return None


class _Pending(msgspec.Struct):
    reservation: Reservation | None
    counters: tuple[_Counter, ...]
    warnings: list[str]


class BudgetGate:
    """Enforce ``budgets`` with ``ledger`` (in memory by default); ``estimate(effect)`` gives a
    call's amounts by metric before it is made (default: :class:`CallEstimate` with
    ``price``); ``clock`` gives wall time (buckets of windowed budgets, seconds budgets)."""

    name = "budgets"

    def __init__(
        self,
        budgets: Iterable[Budget],
        ledger: BudgetLedger | None = None,
        estimate: Callable[[Effect], Amounts] | None = None,
        *,
        price: PriceOf | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = tuple(budgets)
        if not self.budgets:
            raise ValueError("BudgetGate needs at least one Budget")
        self.ledger: BudgetLedger = ledger if ledger is not None else MemoryLedger()
        self.estimate = estimate if estimate is not None else CallEstimate(price)
        self.clock = clock
        self.warnings: collections.Counter[str] = collections.Counter()  # by budget label
        self._counters = _group(b for b in self.budgets if b.on in COUNTED)
        self._timed = tuple(b for b in self.budgets if b.on in TIMED)
        self._by_kind: dict[str, tuple[_Counter, ...]] = {}
        self._pending: dict[str, _Pending] = {}  # by effect key, from before to after
        self._starts: dict[str, float] = {}  # a scope's first sight, once read from the ledger

    async def before(self, effect: Effect) -> Decision | None:
        stale = self._pending.pop(effect.key, None)  # the same call again (a cancelled try)
        if stale is not None and stale.reservation is not None:
            await self.ledger.release(stale.reservation)
        warnings: list[str] = []
        if self._timed:
            decision = await self._check_timed(effect, warnings)
            if decision is not None:
                return decision
        counters = self._counters_for(effect.kind)
        if counters:
            return await self._reserve(effect, counters, warnings)
        if warnings:
            self._pending[effect.key] = _Pending(None, (), warnings)
        return None

    async def after(self, effect: Effect, outcome: Outcome) -> Outcome | None:
        pending = self._pending.pop(effect.key, None)
        failed = outcome.error is not None and not outcome.usage
        if pending is not None and pending.reservation is not None:
            if failed:
                await self.ledger.release(pending.reservation)
            else:
                await self.ledger.settle(pending.reservation, used(outcome.usage))
        elif not failed and (counters := self._counters_for(effect.kind)):
            await self._charge(effect, counters, outcome)  # a call a person let pass
        if pending is None or not pending.warnings:
            return None
        note = "; ".join(pending.warnings)
        return Outcome(outcome.result, outcome.error, outcome.usage, note=note)

    async def _reserve(
        self, effect: Effect, counters: tuple[_Counter, ...], warnings: list[str]
    ) -> Decision | None:
        """Reserve the call's estimate; on a refusal, act on the budget that refused."""
        relaxed: frozenset[Budget] = frozenset()
        rewrite: Rewrite | None = None
        while True:
            entries, owners, used_counters = self._entries(effect, counters, relaxed)
            if not entries:
                break
            result = await self.ledger.reserve(entries)
            if isinstance(result, Reservation):
                warnings.extend(self._warned(result, used_counters))
                self._pending[effect.key] = _Pending(result, used_counters, warnings)
                return rewrite
            budget = owners[result.index]
            assert budget is not None  # only an entry with a limit refuses
            model = effect.args.get("model")
            if budget.action != "fallback" or model is None or model == budget.fallback_model:
                return _refused(budget, _figures(budget, result))
            args = {**effect.args, "model": budget.fallback_model}
            effect = effect.with_args(args)
            relaxed |= {budget}
            reason = _reason(budget, _figures(budget, result))
            rewrite = Rewrite(args, reason=f"{reason}; falling back to {budget.fallback_model!r}")
        if warnings:
            self._pending[effect.key] = _Pending(None, (), warnings)
        return rewrite

    def _entries(
        self, effect: Effect, counters: Sequence[_Counter], relaxed: frozenset[Budget]
    ) -> tuple[list[Entry], list[Budget | None], tuple[_Counter, ...]]:
        amounts = self.estimate(effect)
        now = self.clock()
        entries, owners, used_counters = [], [], []
        for counter in counters:
            first = counter.first
            scope = first.scope(effect)
            if scope is None:
                continue
            owner = counter.enforcing(relaxed)
            limit = None if owner is None else float(owner.limit)
            amount = float(amounts.get(first.on, 0.0))
            entries.append(Entry(scope, first.on, amount, limit, first.bucket(now)))
            owners.append(owner)
            used_counters.append(counter)
        return entries, owners, tuple(used_counters)

    async def _charge(
        self, effect: Effect, counters: tuple[_Counter, ...], outcome: Outcome
    ) -> None:
        """Count a call that went without a reservation (approved past its budget)."""
        actual = used(outcome.usage)
        entries, _, _ = self._entries(
            effect, counters, frozenset(b for c in counters for b in c.budgets)
        )
        if entries:
            charged = [
                msgspec.structs.replace(e, amount=actual.get(e.metric, e.amount), limit=None)
                for e in entries
            ]
            await self.ledger.reserve(charged)

    def _warned(self, reservation: Reservation, counters: Sequence[_Counter]) -> list[str]:
        """Warnings for the warn budgets this reservation took past their limits."""
        out = []
        for entry, total, counter in zip(
            reservation.entries, reservation.totals, counters, strict=True
        ):
            for budget in counter.budgets:
                if budget.action == "warn" and total > budget.limit:
                    figures = {**_base_figures(budget, entry.scope), "spent": total}
                    out.append(self._warn(budget, figures))
        return out

    def _warn(self, budget: Budget, figures: dict[str, Any]) -> str:
        reason = f"{_reason(budget, figures)}; warned, the call goes on"
        self.warnings[budget.label] += 1
        log.warning("%s", reason)
        return reason

    async def _check_timed(self, effect: Effect, warnings: list[str]) -> Decision | None:
        """Steps and seconds budgets: nothing to reserve, only to compare."""
        for budget in self._timed:
            scope = budget.scope(effect)
            if scope is None:
                continue
            if budget.on == "steps":
                spent = float(effect.step + 1)  # steps started so far, this one included
            else:
                now = self.clock()
                start = self._starts.get(scope)
                if start is None:
                    start = self._starts[scope] = await self.ledger.started(scope, now)
                spent = now - start
            if spent <= budget.limit:
                continue
            figures = {**_base_figures(budget, scope), "spent": spent}
            if budget.action == "warn":
                warnings.append(self._warn(budget, figures))
                continue
            return _refused(budget, figures)
        return None

    def _counters_for(self, kind: str) -> tuple[_Counter, ...]:
        counters = self._by_kind.get(kind)
        if counters is None:
            counters = tuple(c for c in self._counters if c.first.counts(kind))
            self._by_kind[kind] = counters
        return counters


def _group(budgets: Iterable[Budget]) -> tuple[_Counter, ...]:
    """Budgets by counter; budgets of one counter must count the same effect kinds."""
    groups: dict[tuple[str, str, float | None], list[Budget]] = {}
    for budget in budgets:
        groups.setdefault((budget.per, budget.on, budget.window), []).append(budget)
    for group in groups.values():
        if len({b.kinds for b in group}) > 1:
            raise ValueError(
                f"budgets {[b.label for b in group]} share one counter ({group[0].on} per "
                f"{group[0].per}) but count different kinds {[b.kinds for b in group]}; "
                "give them the same kinds="
            )
    return tuple(_Counter(tuple(sorted(g, key=lambda b: b.limit))) for g in groups.values())


def _base_figures(budget: Budget, scope: str) -> dict[str, Any]:
    return {
        "budget": budget.label,
        "on": budget.on,
        "per": budget.per,
        "scope": scope,
        "limit": budget.limit,
        "window": budget.window,
        "action": budget.action,
    }


def _figures(budget: Budget, refusal: Refusal) -> dict[str, Any]:
    entry = refusal.entry
    return {**_base_figures(budget, entry.scope), "spent": refusal.spent, "estimate": entry.amount}


def _reason(budget: Budget, figures: Mapping[str, Any]) -> str:
    """ "budget ... exceeded ...": the prefix by which a denial is known as a budget's."""
    needs = f", this call needs ~{figures['estimate']:g}" if "estimate" in figures else ""
    return (
        f"budget {budget.label!r} exceeded for {figures['scope']}: {figures['spent']:g} of "
        f"{budget.limit:g} {budget.on} spent{needs}"
    )


def _refused(budget: Budget, figures: dict[str, Any]) -> Decision:
    reason = _reason(budget, figures)
    if budget.action == "ask":
        return Approve(f"{reason}; a person may let this call go", payload={"budget": figures})
    return Deny(reason)
