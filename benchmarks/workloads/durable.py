"""W2, W2n and W2-batch: the linear graph durable on SQLite.

* W2: Mainspring ``durability="sync"`` against LangGraph's ``SqliteSaver``
  with ``durability="sync"`` (each checkpoint written before the next step, as
  Mainspring's sync does), both in WAL mode with ``synchronous=FULL``, and the
  floor: one raw ``INSERT`` + ``COMMIT`` in WAL/FULL. LangGraph's default
  (``durability="async"``, checkpoints written in the background) is reported
  alongside.
* W2n: the floor and LangGraph with ``synchronous=NORMAL``. Mainspring's store
  commits sync and batch writes with FULL (NORMAL only for ``off`` runs, W1-off),
  so it has no entry there.
* W2-batch: 1,000 concurrent runs with ``durability="batch"``: durable steps/s,
  against ``AsyncSqliteSaver`` with ``ainvoke`` gathered (``durability="sync"``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from mainspring import Runtime

from fleets import burst_extra, langgraph_fleet, mainspring_walls
from floors import JournalCommits, RawCommits, ThreadedCommits
from graphs import LINEAR_STEPS, lg_config, lg_linear, ms_linear
from harness import (
    US,
    Result,
    Samples,
    Settings,
    async_sampler,
    at_least,
    at_most,
    interleave,
    paired,
    sync_sampler,
)

INPUT = {"k": "a"}
DONE = {"k": "v"}
RUNS = 1000


@contextmanager
def lg_sqlite(path: Path, synchronous: str) -> Iterator[tuple[SqliteSaver, str]]:
    """``SqliteSaver`` on its documented connection, pinned to WAL and ``synchronous``.

    SqliteSaver itself sets ``journal_mode=WAL`` (in ``setup()``) and leaves
    ``synchronous`` at SQLite's default (FULL in this build). We set both and
    report what the connection says, so the comparison is on equal terms.
    """
    with closing(sqlite3.connect(path, check_same_thread=False)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        saver = SqliteSaver(conn)
        saver.setup()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        yield saver, f"journal_mode={mode} synchronous={sync}"


# --- W2 and W2n -------------------------------------------------------------------


async def run(settings: Settings) -> list[Result]:
    """W2 and W2n: every contender interleaved in one loop."""
    work = settings.workdir / "w2"
    work.mkdir()
    ms_runs, lg_runs, commits = settings.pick((10, 3, 100), (30, 8, 300))
    app = ms_linear()
    async with AsyncExitStack() as stack:
        floor = stack.enter_context(closing(RawCommits(work / "floor.db", "FULL")))
        floor_n = stack.enter_context(closing(RawCommits(work / "floor_n.db", "NORMAL")))
        floor_t = stack.enter_context(closing(ThreadedCommits(work / "floor_t.db")))
        floor_j = stack.enter_context(closing(JournalCommits(work / "floor_j.db")))
        saver, pragmas = stack.enter_context(lg_sqlite(work / "lg.db", "FULL"))
        saver_n, pragmas_n = stack.enter_context(lg_sqlite(work / "lg_n.db", "NORMAL"))
        lg, lg_n = lg_linear(saver), lg_linear(saver_n)
        rt = await stack.enter_async_context(
            Runtime.open(f"sqlite:///{work / 'ms.db'}", durability="sync")
        )
        assert await rt.run(app, INPUT) == DONE
        assert lg.invoke(INPUT, lg_config(), durability="sync") == DONE
        samplers = {
            "mainspring": async_sampler(lambda: rt.run(app, INPUT), ms_runs, LINEAR_STEPS),
            "langgraph": sync_sampler(
                lambda: lg.invoke(INPUT, lg_config(), durability="sync"), lg_runs, LINEAR_STEPS
            ),
            "floor": sync_sampler(floor.commit_one, commits),
            "floor_thread": async_sampler(floor_t.commit_one, commits),
            "floor_journal": sync_sampler(floor_j.commit_one, commits),
            "langgraph_normal": sync_sampler(
                lambda: lg_n.invoke(INPUT, lg_config(), durability="sync"), lg_runs, LINEAR_STEPS
            ),
            "floor_normal": sync_sampler(floor_n.commit_one, commits),
        }
        if not settings.quick:  # LangGraph's default, durability="async", for reference
            samplers["langgraph_default"] = sync_sampler(
                lambda: lg.invoke(INPUT, lg_config()), lg_runs, LINEAR_STEPS
            )
        samples = await interleave(samplers, reps=settings.pick(5, 15), warmup=1)
    return [_w2(samples, pragmas), _w2n(samples, pragmas_n)]


def _w2(s: dict[str, Samples], pragmas: str) -> Result:
    floor = s["floor"].best * US
    result = Result(
        "W2",
        s["mainspring"].best * US,
        s["langgraph"].best * US,
        "us/step",
        paired_ratio=paired(s["langgraph"], s["mainspring"]),
        extra={
            "floor": floor,
            "vs_floor": paired(s["mainspring"], s["floor"]),
            "floor_thread": s["floor_thread"].best * US,
            "floor_journal": s["floor_journal"].best * US,
            "journal_vs_floor": paired(s["floor_journal"], s["floor"]),
            "mainspring_cpu": s["mainspring"].best_cpu * US,
            "anchor_cpu": s["langgraph"].best_cpu * US,
            "anchor_pragmas": pragmas,
            "spread": max(v.spread for v in s.values()),
        },
    )
    if "langgraph_default" in s:
        result.extra["anchor_default_durability"] = s["langgraph_default"].best * US
    result.checks = [
        at_most(result.extra["vs_floor"], 1.3, "<= 1.3x floor"),
        at_least(result.ratio, 6, ">= 6x faster"),
    ]
    return result


def _w2n(s: dict[str, Samples], pragmas: str) -> Result:
    floor = s["floor_normal"].best * US
    anchor = s["langgraph_normal"].best * US
    return Result(
        "W2n",
        None,
        anchor,
        "us/step",
        extra={
            "floor": floor,
            "anchor_vs_floor": paired(s["langgraph_normal"], s["floor_normal"]),
            "anchor_pragmas": pragmas,
            "note": "Mainspring's SQLite store always commits with synchronous=FULL",
        },
    )


# --- W2-batch ---------------------------------------------------------------------


async def run_batch(settings: Settings) -> list[Result]:
    """W2-batch: 1,000 concurrent durable runs with group commit, in steps/s."""
    work = settings.workdir / "w2batch"
    work.mkdir()
    lg_runs = settings.pick(100, RUNS)
    app = ms_linear()
    async with Runtime.open(f"sqlite:///{work / 'ms.db'}", durability="batch") as rt:
        walls = await mainspring_walls(rt, app, settings, runs=RUNS, input=INPUT, expect=DONE)
    async with aiosqlite.connect(work / "lg.db") as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        lg = lg_linear(AsyncSqliteSaver(conn))
        anchor = await langgraph_fleet(
            lg, lg_runs, INPUT, lg_config, expect=DONE, durability="sync"
        )
    steps = RUNS * LINEAR_STEPS
    result = Result(
        "W2-batch",
        steps / walls["loop"].best,
        lg_runs * LINEAR_STEPS / anchor.wall,
        "steps/s",
        higher_is_better=True,
        extra={
            **burst_extra(walls, steps),
            "runs": RUNS,
            "anchor_runs": lg_runs,
            "mainspring_cpu_per_step_us": walls["loop"].best_cpu / steps * US,
            "anchor_mode": "AsyncSqliteSaver, ainvoke gathered, durability=sync",
        },
    )
    result.checks = [at_least(result.mainspring, 10_000, ">= 10,000 steps/s")]
    return [result]
