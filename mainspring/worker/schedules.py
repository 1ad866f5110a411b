"""Cron schedules, started by the workers of their queue: each tick exactly once.

Any worker of a schedule's queue may start a due tick. The run's id is made of the
schedule and the tick (``schedule:<name>:<epoch seconds>``), so two workers starting the
same tick start one run (starts are idempotent by id), and the tick is then moved on by
a conditional update only one of them wins. Ticks missed while no worker ran are caught
up once (one run), not once per missed tick. Cron expressions are read in UTC.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import anyio

from ..engine.loader import load_graph
from ..errors import MainspringError, RunStateError, StoreError
from ..graph.compiled import CompiledGraph

if TYPE_CHECKING:
    from ..engine.runtime import Runtime
    from ..store._pg_schedules import PgSchedules, Schedule

log = logging.getLogger("mainspring.worker")

_LOOK_EVERY: Final = 10.0  # seconds: new schedules are seen within this


def next_tick(cron: str, after: float) -> float:
    """The first tick of ``cron`` (UTC) strictly after ``after`` (epoch seconds)."""
    from croniter import croniter  # type: ignore[import-untyped]

    if not croniter.is_valid(cron):
        raise RunStateError(
            f"cron expression {cron!r} is not valid: write five fields, "
            "'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *'"
        )
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(cron, start).get_next(float))


def tick_run_id(name: str, tick: float) -> str:
    return f"schedule:{name}:{int(tick)}"


async def run_schedules(rt: Runtime, queues: list[str]) -> None:
    """Start the due ticks of the schedules of ``queues``, until cancelled."""
    schedules: PgSchedules = rt.store.schedules  # type: ignore[attr-defined]
    warned: set[str] = set()
    while True:
        wait = _LOOK_EVERY
        try:
            due, soonest = await schedules.due(queues)
            for schedule in due:
                await start_tick(rt, schedules, schedule, warned)
            if soonest is not None:
                wait = min(wait, soonest + 0.01)
        except StoreError as exc:
            log.warning("could not read or start schedules: %s", exc)
        await anyio.sleep(wait)


async def start_tick(
    rt: Runtime, schedules: PgSchedules, schedule: Schedule, warned: set[str]
) -> None:
    try:
        graph = _graph(rt, schedule.graph)
    except MainspringError as exc:
        if schedule.name not in warned:
            warned.add(schedule.name)
            log.warning("schedule %s: %s; leaving its ticks to a worker that knows it",
                        schedule.name, exc)  # fmt: skip
        return
    run_id = tick_run_id(schedule.name, schedule.next_at)
    metadata: dict[str, Any] = dict(schedule.metadata)
    metadata.setdefault("schedule", schedule.name)
    try:
        await rt.start(
            graph, schedule.input, run_id=run_id, queue=schedule.queue, metadata=metadata
        )
    except StoreError:
        raise  # the store failing: the tick is tried again
    except Exception as exc:  # the start refused this tick (its input, its id)
        # Skipped, not retried in a loop: the same start would be refused again. Said
        # loudly; the schedule goes on at its next tick.
        log.error("schedule %s: the run of tick %s could not start, tick skipped: %s",
                  schedule.name, run_id, exc)  # fmt: skip
    try:
        following = next_tick(schedule.cron, max(schedule.next_at, time.time()))
    except RunStateError as exc:  # a cron expression written into the table by hand
        log.error("schedule %s: %s; not started again until it is fixed", schedule.name, exc)
        following = float("inf")
    if await schedules.advance(schedule.name, schedule.next_at, following, run_id):
        log.info("schedule %s: started run %s", schedule.name, run_id)


def _graph(rt: Runtime, ref: str) -> CompiledGraph:
    if ":" in ref:
        return load_graph(ref)
    known = rt.loader.known("", ref, None)
    if known is None:
        raise RunStateError(f"graph {ref!r} is not one this worker knows (--graph MODULE:GRAPH)")
    return known
