"""The graph of the many-hosts test (tests/test_scaleout_hosts.py), run by ``mainspring worker``.

A run makes three durable effects (``a``, ``b``, ``c``), a pause after each. Every effect
is a transaction on PostgreSQL (``SCALEOUT_SINK``, schema ``SCALEOUT_SCHEMA``, from the
worker's environment) that writes two rows:

- ``effect_attempts``: one row per execution, never deduplicated (who: ``SCALEOUT_WORKER``
  and the pid; when: the database's clock), so every re-execution is visible;
- ``effects``: the effect applied, once per idempotency key (``ON CONFLICT DO NOTHING``),
  as a sink that deduplicates by the key the runtime gives an effect does.

The effect's result, recorded in the journal, is its attempt's id: the test can tell which
execution, by which worker, the journal kept.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph

STEPS = ("a", "b", "c")

SINK_DDL = (
    """CREATE TABLE {s}.effect_attempts (
        attempt text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
        key text NOT NULL, worker text NOT NULL, pid int NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE {s}.effects (
        key text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
        attempt text NOT NULL)""",
)


class Work(TypedDict, total=False):
    pause: float
    done: list[str]


async def record(run_id: str, step: str, idempotency_key: str = "") -> str:
    """Execute effect ``step`` of ``run_id``: its rows in the sink; its attempt id back."""
    import asyncpg

    schema = '"' + os.environ["SCALEOUT_SCHEMA"].replace('"', '""') + '"'
    attempt = uuid.uuid4().hex
    conn = await asyncpg.connect(os.environ["SCALEOUT_SINK"], timeout=30)
    try:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO {schema}.effect_attempts (attempt, run_id, step, key, worker, pid)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                attempt,
                run_id,
                step,
                idempotency_key,
                os.environ.get("SCALEOUT_WORKER", "?"),
                os.getpid(),
            )
            await conn.execute(
                f"INSERT INTO {schema}.effects (key, run_id, step, attempt)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                idempotency_key,
                run_id,
                step,
                attempt,
            )
    finally:
        await conn.close()
    return attempt


def build() -> Any:
    g = Graph(Work, name="scaleout")

    @g.node
    async def work(s: Work, ctx: Context) -> dict[str, Any]:
        done = []
        for step in STEPS:
            done.append(await ctx.step(step, record, ctx.run_id, step))
            await anyio.sleep(s.get("pause", 0.0))
        return {"done": done}

    g.edge(START, "work")
    g.edge("work", END)
    return g.compile()


app = build()
