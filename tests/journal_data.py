"""Typed event data for store tests: a value carried by an event of a given kind."""

from __future__ import annotations

from typing import Any

from mainspring.events import (
    Emitted,
    Event,
    EventData,
    EventKind,
    Finished,
    RunStarted,
    StepFinished,
    StepStarted,
)


def payload(kind: EventKind, value: Any = None) -> EventData:
    """Event data of ``kind`` that carries ``value`` (where the kind can carry one)."""
    if kind is EventKind.RUN_STARTED:
        return RunStarted("g", input=value)
    if kind is EventKind.STEP_STARTED:
        return StepStarted(0, 0, "n", arg=value)
    if kind is EventKind.STEP_FINISHED:
        return StepFinished(0, 0, "n", update=value)
    if kind is EventKind.FINISHED:
        return Finished()
    if kind is EventKind.EMITTED:
        return Emitted(0, 0, "n", value)
    raise ValueError(f"no test payload for {kind}")


def event(run_id: str, seq: int, kind: EventKind, ts: float, value: Any = None) -> Event:
    return Event.of(run_id, seq, ts, payload(kind, value))
