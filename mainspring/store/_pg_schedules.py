"""Cron schedules of the PostgreSQL store (``PostgresStore.schedules``): the table the
workers start ticks from (``worker/schedules.py`` says how each tick starts exactly once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ._pg_queue import NOW, PgQueues


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule: at each tick of ``cron`` one run of ``graph`` in ``queue``."""

    name: str
    cron: str
    graph: str
    input: Any
    queue: str
    metadata: dict[str, Any]
    next_at: float  # epoch seconds of the next tick
    last_run: str | None = None


class PgSchedules:
    """Cron schedules of one PostgreSQL store (``PostgresStore.schedules``).

    A tick is started by whichever worker sees it due: the run id is made of the
    schedule's name and the tick, so two workers starting the same tick start one run,
    and the tick is then moved on by a conditional update (``advance``).
    """

    def __init__(self, queues: PgQueues) -> None:
        self._q = queues
        self._s = queues._s

    async def put(self, schedule: Schedule) -> None:
        await self._q._fetch(
            f"saving schedule {schedule.name!r}",
            f"""INSERT INTO {self._s}.schedules
  (name, cron, graph, input, queue, metadata, next_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, {NOW})
ON CONFLICT (name) DO UPDATE SET cron = $2, graph = $3, input = $4, queue = $5,
  metadata = $6::jsonb, next_at = $7""",
            schedule.name, schedule.cron, schedule.graph,
            orjson.dumps(schedule.input).decode(), schedule.queue,
            orjson.dumps(schedule.metadata).decode(), schedule.next_at,
        )  # fmt: skip

    async def remove(self, name: str) -> bool:
        rows = await self._q._fetch(
            f"removing schedule {name!r}",
            f"DELETE FROM {self._s}.schedules WHERE name = $1 RETURNING name",
            name,
        )
        return bool(rows)

    async def all(self) -> list[Schedule]:
        rows = await self._q._fetch(
            "reading schedules",
            f"SELECT name, cron, graph, input, queue, metadata::text, next_at, last_run"
            f" FROM {self._s}.schedules ORDER BY name",
        )
        return [_schedule_of(r) for r in rows]

    async def due(self, queues: Sequence[str]) -> tuple[list[Schedule], float | None]:
        """The schedules of ``queues`` due now, and seconds until the next one is due."""
        rows = await self._q._fetch(
            "reading due schedules",
            f"SELECT name, cron, graph, input, queue, metadata::text, next_at, last_run,"
            f" next_at - {NOW} FROM {self._s}.schedules WHERE queue = ANY($1::text[])",
            list(queues),
        )
        due = [_schedule_of(r) for r in rows if r[8] <= 0]
        waits = [float(r[8]) for r in rows if r[8] > 0]
        return due, min(waits) if waits else None

    async def advance(self, name: str, due_at: float, next_at: float, run_id: str) -> bool:
        """Move the tick on, if nobody did: True for the worker that did."""
        rows = await self._q._fetch(
            f"advancing schedule {name!r}",
            f"UPDATE {self._s}.schedules SET next_at = $3, last_run = $4"
            f" WHERE name = $1 AND next_at = $2 RETURNING name",
            name, due_at, next_at, run_id,
        )  # fmt: skip
        return bool(rows)


def _schedule_of(r: Any) -> Schedule:
    return Schedule(
        r[0], r[1], r[2], orjson.loads(r[3]), r[4], orjson.loads(r[5]), float(r[6]), r[7]
    )
