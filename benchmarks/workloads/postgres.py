"""W3 and W3-batch: the linear graph durable on PostgreSQL.

* W3: Mainspring ``durability="sync"`` (schema ``bench_w3``) against
  LangGraph's ``PostgresSaver`` on a psycopg autocommit connection, as its docs
  set it up, with ``durability="sync"`` (schema ``bench_w3_langgraph``, dropped
  and recreated), and the floor: one autocommit ``INSERT`` round trip (asyncpg).
* W3-batch: 1,000 concurrent runs with ``durability="batch"``: durable steps/s,
  against ``AsyncPostgresSaver`` on a connection pool with ``ainvoke`` gathered.

Skipped, with the reason, when ``mainspring.store.postgres`` cannot be
imported or the server cannot be reached. Every schema used is dropped after.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from mainspring import Runtime, StoreUnavailableError

from fleets import burst_extra, langgraph_fleet, mainspring_walls
from floors import JournalStatements, RawInserts
from graphs import LINEAR_STEPS, lg_config, lg_linear, ms_linear
from harness import (
    US,
    Result,
    Samples,
    Settings,
    Transient,
    async_sampler,
    at_least,
    at_most,
    interleave,
    paired,
    skipped,
    sync_sampler,
)

INPUT = {"k": "a"}
DONE = {"k": "v"}
RUNS = 1000
MS_SCHEMA, LG_SCHEMA, FLOOR_SCHEMA = "bench_w3", "bench_w3_langgraph", "bench_w3_floor"
POOL_SIZE = 10  # the Mainspring store's default max_size, for LangGraph's pool too


async def unavailable(pg_url: str) -> str | None:
    """Why W3 cannot run here, or None if it can."""
    try:
        importlib.import_module("mainspring.store.postgres")
    except ImportError as exc:
        return f"mainspring.store.postgres is not importable ({exc})"
    try:
        conn = await asyncpg.connect(pg_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL not reachable at {pg_url} ({exc})"
    await conn.close()
    return None


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


async def reset_schemas(pg_url: str, *schemas: str, create: bool) -> None:
    """Drop ``schemas`` (and everything in them); recreate them empty if ``create``."""
    conn = await asyncpg.connect(pg_url)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            if create:
                await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_schemas(pg_url: str, *schemas: str) -> AsyncIterator[None]:
    """Empty schemas for LangGraph and the floor, Mainspring's dropped (its store creates it)."""
    await reset_schemas(pg_url, MS_SCHEMA, create=False)
    await reset_schemas(pg_url, *schemas, create=True)
    try:
        yield
    finally:
        await reset_schemas(pg_url, MS_SCHEMA, *schemas, create=False)


# What a server going away looks like to each client: asyncpg, psycopg, Mainspring's store.
_GONE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection is closed
    psycopg.OperationalError,
    StoreUnavailableError,
    ConnectionError,
)


def _server_gone(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain (or group) that says the server went away, if any."""
    while exc is not None:
        if isinstance(exc, _GONE):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            return next(filter(None, map(_server_gone, exc.exceptions)), None)
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def server_restarts_are_transient() -> Iterator[None]:
    """Turn a server restart during a measurement (it is shared) into :class:`Transient`."""
    try:
        yield
    except (Exception, asyncio.CancelledError) as exc:
        gone = _server_gone(exc)
        if gone is not None:
            raise Transient(f"PostgreSQL went away ({type(gone).__name__}: {gone})") from exc
        raise


def _lg_conn_kwargs() -> dict[str, Any]:
    """What ``PostgresSaver.from_conn_string`` uses, plus our schema on the search path."""
    return {
        "autocommit": True,
        "prepare_threshold": 0,
        "row_factory": dict_row,
        "options": f"-c search_path={LG_SCHEMA}",
    }


@contextmanager
def lg_saver(pg_url: str) -> Iterator[PostgresSaver]:
    with psycopg.Connection.connect(pg_url, **_lg_conn_kwargs()) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        yield saver


@asynccontextmanager
async def lg_async_saver(pg_url: str) -> AsyncIterator[AsyncPostgresSaver]:
    pool = AsyncConnectionPool(
        pg_url,
        connection_class=AsyncConnection[DictRow],
        max_size=POOL_SIZE,
        kwargs=_lg_conn_kwargs(),
        open=False,
    )
    async with pool:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver


# --- W3 ---------------------------------------------------------------------------


async def run(settings: Settings) -> list[Result]:
    reason = await unavailable(settings.pg_url)
    if reason is not None:
        return [skipped("W3", "us/step", reason)]
    with server_restarts_are_transient():
        async with fresh_schemas(settings.pg_url, LG_SCHEMA, FLOOR_SCHEMA):
            return [_w3(await _measure(settings))]


async def _measure(settings: Settings) -> dict[str, Samples]:
    ms_runs, lg_runs, inserts = settings.pick((10, 3, 100), (30, 8, 300))
    app = ms_linear()
    async with AsyncExitStack() as stack:
        floor = await RawInserts.open(settings.pg_url, FLOOR_SCHEMA)
        stack.push_async_callback(floor.close)
        floor_j = await JournalStatements.open(settings.pg_url, FLOOR_SCHEMA)
        stack.push_async_callback(floor_j.close)
        lg = lg_linear(stack.enter_context(lg_saver(settings.pg_url)))
        url = with_query(settings.pg_url, schema=MS_SCHEMA)
        rt = await stack.enter_async_context(Runtime.open(url, durability="sync"))
        assert await rt.run(app, INPUT) == DONE
        assert lg.invoke(INPUT, lg_config(), durability="sync") == DONE
        samplers = {
            "mainspring": async_sampler(lambda: rt.run(app, INPUT), ms_runs, LINEAR_STEPS),
            "langgraph": sync_sampler(
                lambda: lg.invoke(INPUT, lg_config(), durability="sync"), lg_runs, LINEAR_STEPS
            ),
            "floor": async_sampler(floor.insert_one, inserts),
            "floor_journal": async_sampler(floor_j.commit_one, inserts),
        }
        return await interleave(samplers, reps=settings.pick(5, 15), warmup=1)


def _w3(s: dict[str, Samples]) -> Result:
    floor = s["floor"].best * US
    result = Result(
        "W3",
        s["mainspring"].best * US,
        s["langgraph"].best * US,
        "us/step",
        paired_ratio=paired(s["langgraph"], s["mainspring"]),
        extra={
            "floor": floor,
            "vs_floor": paired(s["mainspring"], s["floor"]),
            "floor_journal": s["floor_journal"].best * US,
            "journal_vs_floor": paired(s["floor_journal"], s["floor"]),
            "mainspring_cpu": s["mainspring"].best_cpu * US,
            "anchor_cpu": s["langgraph"].best_cpu * US,
            "spread": max(v.spread for v in s.values()),
        },
    )
    result.checks = [
        at_most(result.extra["vs_floor"], 1.5, "<= 1.5x floor"),
        at_least(result.ratio, 5, ">= 5x faster"),
    ]
    return result


# --- W3-batch ---------------------------------------------------------------------


async def run_batch(settings: Settings) -> list[Result]:
    reason = await unavailable(settings.pg_url)
    if reason is not None:
        return [skipped("W3-batch", "steps/s", reason)]
    with server_restarts_are_transient():
        async with fresh_schemas(settings.pg_url, LG_SCHEMA):
            return [await _measure_batch(settings)]


async def _measure_batch(settings: Settings) -> Result:
    lg_runs = settings.pick(100, RUNS)
    app = ms_linear()
    async with Runtime.open(
        with_query(settings.pg_url, schema=MS_SCHEMA), durability="batch"
    ) as rt:
        walls = await mainspring_walls(rt, app, settings, runs=RUNS, input=INPUT, expect=DONE)
    async with lg_async_saver(settings.pg_url) as saver:
        anchor = await langgraph_fleet(
            lg_linear(saver), lg_runs, INPUT, lg_config, expect=DONE, durability="sync"
        )
    steps = RUNS * LINEAR_STEPS
    result = Result(
        "W3-batch",
        steps / walls["loop"].best,
        lg_runs * LINEAR_STEPS / anchor.wall,
        "steps/s",
        higher_is_better=True,
        extra={
            **burst_extra(walls, steps),
            "runs": RUNS,
            "anchor_runs": lg_runs,
            "mainspring_cpu_per_step_us": walls["loop"].best_cpu / steps * US,
            "anchor_mode": f"AsyncPostgresSaver on a pool of {POOL_SIZE}, ainvoke gathered, durability=sync",
        },
    )
    result.checks = [at_least(result.mainspring, 5_000, ">= 5,000 steps/s")]
    return result
