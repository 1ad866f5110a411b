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

Effect ``b`` of a worker whose ``SCALEOUT_GATE`` is set stops at a gate (a row in ``gate``;
it says it waits with a row in ``gate_waits``) until the test opens it, so the test can hit
workers at the moments that matter: ``write-then-wait``, applied but not yet journaled (a
worker killed there leaves an effect that must run again, with the same key);
``wait-then-write``, not yet applied, and not cancellable (as a sync effect's thread is
not): a worker cut off there writes late, after its run was taken over.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph

STEPS = ("a", "b", "c")
GATED = "b"

SINK_DDL = (
    """CREATE TABLE {s}.effect_attempts (
        attempt text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
        key text NOT NULL, worker text NOT NULL, pid int NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE {s}.effects (
        key text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
        attempt text NOT NULL)""",
    "CREATE TABLE {s}.gate (opened timestamptz NOT NULL DEFAULT clock_timestamp())",
    """CREATE TABLE {s}.gate_waits (
        run_id text NOT NULL, worker text NOT NULL, pid int NOT NULL)""",
)


class Work(TypedDict, total=False):
    pause: float
    done: list[str]


async def record(run_id: str, step: str, idempotency_key: str = "") -> str:
    """Execute effect ``step`` of ``run_id``: its rows in the sink; its attempt id back."""
    import asyncpg

    schema = '"' + os.environ["SCALEOUT_SCHEMA"].replace('"', '""') + '"'
    gate = os.environ.get("SCALEOUT_GATE", "") if step == GATED else ""
    conn = await asyncpg.connect(os.environ["SCALEOUT_SINK"], timeout=30)
    try:
        if gate == "wait-then-write":
            with anyio.CancelScope(shield=True):
                await _wait_at_gate(conn, schema, run_id)
                return await _write(conn, schema, run_id, step, idempotency_key)
        attempt = await _write(conn, schema, run_id, step, idempotency_key)
        if gate == "write-then-wait":
            await _wait_at_gate(conn, schema, run_id)
        return attempt
    finally:
        await conn.close()


async def _wait_at_gate(conn: Any, schema: str, run_id: str) -> None:
    worker = os.environ.get("SCALEOUT_WORKER", "?")
    await conn.execute(
        f"INSERT INTO {schema}.gate_waits VALUES ($1, $2, $3)", run_id, worker, os.getpid()
    )
    while not await conn.fetchval(f"SELECT count(*) FROM {schema}.gate"):
        await anyio.sleep(0.05)


async def _write(conn: Any, schema: str, run_id: str, step: str, idempotency_key: str) -> str:
    attempt = uuid.uuid4().hex
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
