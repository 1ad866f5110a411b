"""Speculative execution: start several ways to an answer, keep the first good one.

A cheap path (a cache, a small model) races the expensive one; the first result
that passes its check wins and the rest are cancelled. Each candidate's fate
(finished, failed, rejected, cancelled, or skipped when it never started) is
returned with its latency and, for a :class:`ModelResponse`, its usage, so the
losers are accounted as well as the winner::

    result = await speculate([
        Candidate("cache", lambda: cache.get(key), check=lambda hit: hit is not None),
        Candidate("small", lambda: router.complete("small", request), check=good_enough),
        Candidate("large", lambda: router.complete("large", request), delay=0.2),
    ])
    result.winner, result.value, result.usage, result.attempts()
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import anyio
import msgspec

from .errors import NoModelAvailableError
from .messages import ModelResponse, Usage

T = TypeVar("T")

Status = Literal["finished", "failed", "rejected", "cancelled", "skipped"]


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """One way to the answer: ``start()`` after ``delay`` seconds, its value kept only if
    ``check(value)`` (sync or async) is true; no check accepts any value."""

    name: str
    start: Callable[[], Awaitable[T]]
    check: Callable[[T], bool | Awaitable[bool]] | None = None
    delay: float = 0.0


@dataclass(slots=True)
class CandidateRecord:
    """What became of one candidate; ``reason`` says why it failed or was rejected."""

    name: str
    status: Status = "skipped"
    latency: float | None = None  # seconds from its start to its end (or cancellation)
    reason: str = ""
    usage: Usage | None = None  # when its value was a ModelResponse

    def to_attempt(self) -> dict[str, Any]:
        """The record in the shape of ``ModelResponse.attempts`` entries."""
        outcome = {"finished": "ok", "failed": "error", "rejected": "error"}.get(
            self.status, self.status
        )
        entry: dict[str, Any] = {
            "model": self.name,
            "outcome": outcome,
            "error": "Rejected" if self.status == "rejected" else None,
            "message": self.reason,
            "latency": self.latency,
            "hedge": False,
        }
        if self.status == "failed":
            entry["error"] = self.reason.split(":", 1)[0]
        if self.usage is not None:
            entry["usage"] = msgspec.to_builtins(self.usage)
        return entry


@dataclass(frozen=True, slots=True)
class Speculation(Generic[T]):
    """The winner's name and value, and every candidate's record (in the given order)."""

    winner: str
    value: T
    records: list[CandidateRecord]

    @property
    def usage(self) -> Usage:
        """Everything the candidates are known to have used, the winner's included."""
        total = Usage()
        for record in self.records:
            if record.usage is not None:
                total = total + record.usage
        return total

    def attempts(self) -> list[dict[str, Any]]:
        return [record.to_attempt() for record in self.records]


class SpeculationError(NoModelAvailableError):
    """No candidate gave a value that passed its check; ``attempts`` says what each did."""

    what_to_do = "see each candidate's reason; add a candidate or loosen a check"


async def speculate(
    candidates: Sequence[Candidate[T]], *, clock: Callable[[], float] = time.perf_counter
) -> Speculation[T]:
    """Run the candidates at once (each after its delay); the first value that passes its
    check wins and the others are cancelled. Raises SpeculationError when none passes."""
    names = [c.name for c in candidates]
    if not candidates or len(set(names)) != len(names):
        raise ValueError(f"speculate needs candidates with distinct names, not {names}")
    records = [CandidateRecord(c.name) for c in candidates]
    won: list[tuple[str, T]] = []
    async with anyio.create_task_group() as tg:
        for candidate, record in zip(candidates, records, strict=True):
            tg.start_soon(_run, candidate, record, won, tg.cancel_scope, clock)
    if won:
        return Speculation(won[0][0], won[0][1], records)
    reasons = "; ".join(f"{r.name}: {r.status} ({r.reason})" for r in records)
    raise SpeculationError(
        f"no candidate passed: {reasons}", attempts=[r.to_attempt() for r in records]
    )


async def _run(
    candidate: Candidate[T],
    record: CandidateRecord,
    won: list[tuple[str, T]],
    scope: anyio.CancelScope,
    clock: Callable[[], float],
) -> None:
    if candidate.delay > 0:
        await anyio.sleep(candidate.delay)  # cancelled here: never started, "skipped"
    started = clock()
    try:
        value = await candidate.start()
        if isinstance(value, ModelResponse):
            record.usage = value.usage
        passed = await _passes(candidate, value)
    except anyio.get_cancelled_exc_class():
        record.status, record.latency = "cancelled", clock() - started
        raise
    except Exception as exc:  # a failed candidate leaves the race to the others
        record.status, record.latency = "failed", clock() - started
        record.reason = f"{type(exc).__name__}: {exc}"
        return
    record.latency = clock() - started
    if not passed:
        record.status, record.reason = "rejected", "its check refused the value"
        return
    record.status = "finished"
    if not won:
        won.append((candidate.name, value))
        scope.cancel()


async def _passes(candidate: Candidate[T], value: T) -> bool:
    if candidate.check is None:
        return True
    verdict = candidate.check(value)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)
