"""Budgets: how much a run, a thread, a user or a tenant may spend, and what happens then.

``Budget(limit=100_000, on="tokens", per="tenant", window=86400)`` is a daily token
budget per tenant; ``Budget(5.0, on="cost", per="user", action="fallback",
fallback_model="small")`` moves a user's calls to a cheaper model once they have
spent five dollars. Budgets are enforced by :class:`~mainspring.models.budget_gate.BudgetGate`
on the effect gate, before each call; this module says what a budget is, what a
call is estimated to use, and what it did use.

What is counted:

* ``tokens`` (input + output), ``input_tokens``, ``output_tokens``, ``cost`` (from
  usage, or the price table) and ``calls``: reserved before the call from an
  estimate, settled after it with the usage it reports; by default on effects of
  kind ``"model"`` only (``kinds=`` widens it);
* ``steps``: the run's steps so far (per run only: a step is a run's own);
* ``seconds``: wall time since the scope was first seen by a gate (kept in the
  ledger, so every process agrees when a tenant or a run started).

Scopes come from the effect: ``run`` its run id, ``thread`` its thread, ``user`` and
``tenant`` the run's metadata (``metadata={"tenant": ..., "user": ...}`` at start).
A run without the scope's value (no thread, no tenant) is not under that budget.
A thread or a user is one tenant's: tenant acme's thread ``t1`` is counted as
``tenant:acme/thread:t1``, apart from another tenant's ``t1`` (a run of the default
tenant keeps ``thread:t1``). Tenant names are percent-quoted in scopes, so no tenant,
thread or user name can make two scopes one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

import msgspec

from ..engine.gate import Effect
from ..errors import EffectDeniedError
from .errors import BudgetExceededError, LoopDetectedError, ModelError
from .spec import Price

Metric: TypeAlias = Literal[
    "tokens", "input_tokens", "output_tokens", "cost", "calls", "steps", "seconds"
]
Per: TypeAlias = Literal["run", "thread", "user", "tenant"]
Action: TypeAlias = Literal["stop", "warn", "fallback", "ask"]
Amounts: TypeAlias = Mapping[str, float]  # metric -> amount, e.g. {"tokens": 1200, "cost": 0.01}

COUNTED: Final = frozenset({"tokens", "input_tokens", "output_tokens", "cost", "calls"})
TIMED: Final = frozenset({"steps", "seconds"})
PERS: Final = ("run", "thread", "user", "tenant")
ACTIONS: Final = ("stop", "warn", "fallback", "ask")
DEFAULT_OUTPUT_TOKENS: Final = 1024  # a call's output estimate when it sets no max_tokens


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``limit`` of ``on`` per ``per`` (per ``window`` seconds, or for ever); when a
    call would pass it: ``stop`` (deny the call), ``warn`` (let it go, say so), ``fallback``
    (call ``fallback_model`` instead) or ``ask`` (a person approves, a durable interrupt)."""

    limit: float
    on: Metric = "tokens"
    per: Per = "run"
    action: Action = "stop"
    fallback_model: str | None = None
    window: float | None = None  # seconds; None: never resets. 86400: a daily budget
    kinds: tuple[str, ...] | None = ("model",)  # effect kinds it counts; None: every kind
    name: str = ""  # how reasons, payloads and logs name it; "<on> per <per>" by default

    def __post_init__(self) -> None:
        _check(self)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        window = f" per {self.window:g}s" if self.window is not None else ""
        return f"{self.on} per {self.per}{window}"

    def counts(self, kind: str) -> bool:
        """Whether an effect of ``kind`` is under this budget (steps and seconds: every kind)."""
        return self.kinds is None or self.on in TIMED or kind in self.kinds

    def scope(self, effect: Effect) -> str | None:
        """The counter's scope for ``effect`` ("tenant:t1", "run:r1/86400s"), or None if the
        run has no value for ``per`` (no thread, no tenant in its metadata)."""
        value = scope_value(self.per, effect)
        if value is None:
            return None
        key = f"{self.per}:{value}"
        if self.per in ("thread", "user"):
            tenant = effect.metadata.get("tenant")
            if tenant:  # the same thread or user id in two tenants is two scopes
                key = f"tenant:{_quoted(str(tenant))}/{key}"
        return key if self.window is None else f"{key}/{self.window:g}s"

    def bucket(self, now: float) -> int:
        return 0 if self.window is None else int(now // self.window)


def scope_value(per: str, effect: Effect) -> str | None:
    if per == "run":
        return effect.run_id
    if per == "thread":
        return effect.thread
    value = effect.metadata.get(per)
    if value is None:
        return None
    if per == "tenant":  # the default tenant ("") is under no per-tenant budget, as before
        return _quoted(str(value)) if value else None
    return str(value)


@lru_cache(maxsize=4096)
def _quoted(name: str) -> str:
    """``name`` percent-quoted for a scope key (cached: it is asked on every gated call)."""
    return quote(name, safe="")


def _check(budget: Budget) -> None:
    """Refuse a budget that cannot mean anything, saying what to write instead."""
    limit = budget.limit
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
        raise ValueError(f"Budget limit={limit!r}: give a finite number, e.g. limit=100_000")
    if limit < 0:
        raise ValueError(f"Budget limit={limit!r}: a limit cannot be negative")
    if budget.on not in COUNTED | TIMED:
        raise ValueError(f"Budget on={budget.on!r}: use one of {sorted(COUNTED | TIMED)}")
    if budget.per not in PERS:
        raise ValueError(f"Budget per={budget.per!r}: use one of {list(PERS)}")
    if budget.action not in ACTIONS:
        raise ValueError(f"Budget action={budget.action!r}: use one of {list(ACTIONS)}")
    if budget.action == "fallback" and not budget.fallback_model:
        raise ValueError("Budget action='fallback' needs fallback_model='<a cheaper model>'")
    if budget.action != "fallback" and budget.fallback_model is not None:
        raise ValueError(
            f"Budget fallback_model={budget.fallback_model!r} is used only with "
            f"action='fallback' (this one has action={budget.action!r})"
        )
    if budget.window is not None and not (budget.window > 0 and math.isfinite(budget.window)):
        raise ValueError(f"Budget window={budget.window!r}: give seconds > 0, or None (for ever)")
    if budget.on in TIMED and budget.window is not None:
        raise ValueError(f"Budget on={budget.on!r} takes no window: it counts from the start")
    if budget.on in TIMED and budget.action == "fallback":
        raise ValueError(
            f"Budget on={budget.on!r} cannot fall back: a cheaper model spends the same "
            "steps and time; use action='stop', 'ask' or 'warn'"
        )
    if budget.on == "steps" and budget.per != "run":
        raise ValueError(
            f"Budget on='steps' is per run only (got per={budget.per!r}): steps are a run's "
            "own; bound a thread, user or tenant with calls, tokens, cost or seconds"
        )
    if budget.kinds is not None and not budget.kinds:
        raise ValueError("Budget kinds=(): name the effect kinds it counts, or None for all")


PriceOf: TypeAlias = Callable[[str], Price | None]


class CallEstimate:
    """The default estimate of a model call, before it is made: input tokens ~ a quarter of
    the JSON of its messages and tools, output tokens its ``max_tokens`` (or
    ``default_output_tokens``), cost from ``price(model)`` when given (per million tokens).
    The gateway may pass its tokenizer and price table as ``BudgetGate(estimate=...)``."""

    __slots__ = ("default_output_tokens", "price")

    def __init__(
        self, price: PriceOf | None = None, *, default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    ) -> None:
        self.price = price
        self.default_output_tokens = default_output_tokens

    def __call__(self, effect: Effect) -> dict[str, float]:
        args = effect.args
        prompt = _json_size(args.get("messages")) + _json_size(args.get("tools"))
        input_tokens = float(prompt // 4)
        max_tokens = args.get("max_tokens")
        output = float(max_tokens if isinstance(max_tokens, int) else self.default_output_tokens)
        amounts = {
            "input_tokens": input_tokens,
            "output_tokens": output,
            "tokens": input_tokens + output,
            "calls": 1.0,
        }
        model = args.get("model")
        price = self.price(model) if self.price is not None and isinstance(model, str) else None
        amounts["cost"] = cost_of(price, input_tokens, output) if price is not None else 0.0
        return amounts


def cost_of(price: Price, input_tokens: float, output_tokens: float) -> float:
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def used(usage: Mapping[str, Any] | None) -> dict[str, float]:
    """What a call used, from its ``Outcome.usage``; metrics it does not report (a cost
    left ``None``) are left out, so the ledger keeps their estimate."""
    if not usage:
        return {"calls": 1.0}
    input_tokens = float(usage.get("input_tokens") or 0)
    output_tokens = float(usage.get("output_tokens") or 0)
    amounts = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
        "calls": 1.0,
    }
    cost = usage.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        amounts["cost"] = float(cost)
    return amounts


_encode = msgspec.json.Encoder(enc_hook=repr).encode


def _json_size(value: Any) -> int:
    if not value:
        return 0
    try:
        return len(_encode(value))
    except Exception:  # not JSON-shaped: its repr is as good a size
        return len(repr(value))


def denial_error(denied: EffectDeniedError) -> ModelError | None:
    """The model error a denial of the budget gate or the loop breaker stands for, or None.

    Known by the reason's prefix ("budget ...", "loop detected ..."), which the journal
    keeps, so a resumed run's recorded denial maps the same way:
    ``except EffectDeniedError as e: raise denial_error(e) or e``.
    """
    reason = denied.reason
    if reason.startswith("budget "):
        return BudgetExceededError(reason)
    if reason.startswith("loop detected"):
        return LoopDetectedError(reason)
    return None
