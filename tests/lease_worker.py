"""A worker process for the lease tests: it drives runs, or takes over what others left.

    python -m tests.lease_worker --store URL --ledger PATH --role drive|take [options]

``drive`` starts ``--runs`` runs (``lease-0``, ...) of a graph whose one node calls
``--effects`` effects with a pause between them, and waits for their results;
``take`` opens a runtime that recovers orphaned runs and waits until every run has
finished. Each process prints ``READY``, then ``RESULT <run> <json>`` per run (or
``ERROR <run> <type>: <message>``), then ``DONE adopted=<n>``.

Every effect execution is a row in the ``--ledger`` SQLite file: (key, effect, pid,
wall time), never deduplicated, so a test can tell who executed what, and when.
``--clock-offset S`` makes this process's wall clock run ``S`` seconds ahead.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from typing import Any, TypedDict

import anyio


def _skew_clock(offset: float) -> None:
    """A process whose wall clock is off (as with a bad NTP sync), before anything reads it."""
    real = time.time
    time.time = lambda: real() + offset


class Work(TypedDict, total=False):
    effects: int
    pause: float
    done: list[int]


def build(ledger: str) -> Any:
    from mainspring import END, START, Context, Graph

    def execute(index: int, idempotency_key: str) -> int:
        conn = sqlite3.connect(ledger, timeout=30)
        try:
            conn.execute(
                "INSERT INTO executions (key, effect, pid, ts) VALUES (?, ?, ?, ?)",
                (idempotency_key, index, os.getpid(), time.monotonic()),
            )
            conn.commit()
        finally:
            conn.close()
        return index

    g = Graph(Work, name="lease-demo")

    @g.node
    async def work(s: Work, ctx: Context) -> dict[str, Any]:
        done = []
        for i in range(s["effects"]):
            done.append(await ctx.step(f"e{i}", execute, i))
            await anyio.sleep(s["pause"])
        return {"done": done}

    g.edge(START, "work")
    g.edge("work", END)
    return g.compile()


def _say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> int:
    from mainspring import RunStatus, Runtime

    app = build(args.ledger)
    run_ids = [f"lease-{n}" for n in range(args.runs)]
    async with Runtime.open(args.store, graphs=[app], lease_ttl=args.lease_ttl) as rt:
        adopted = len(rt.live_runs())
        _say("READY")
        if args.role == "drive":
            handles = [
                await rt.start(app, {"effects": args.effects, "pause": args.pause}, run_id=r)
                for r in run_ids
            ]
        else:
            while True:  # until every run exists and has ended
                runs = {r.run_id: r for r in await rt.list_runs(limit=1000)}
                if all(r in runs and runs[r].status is RunStatus.FINISHED for r in run_ids):
                    break
                adopted = max(adopted, sum(1 for r in run_ids if r in rt.live_runs()))
                await anyio.sleep(0.05)
                if args.for_seconds and time.monotonic() > args.started + args.for_seconds:
                    break
            handles = [rt.handle(r) for r in run_ids if r in runs]
        if args.role == "take" and args.for_seconds:
            _say(f"DONE adopted={adopted}")
            return 0
        for handle in handles:
            try:
                _say(f"RESULT {handle.run_id} {json.dumps(await handle.result())}")
            except Exception as exc:
                _say(f"ERROR {handle.run_id} {type(exc).__name__}: {exc}")
        _say(f"DONE adopted={adopted}")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--role", choices=("drive", "take"), required=True)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--effects", type=int, default=6)
    p.add_argument("--pause", type=float, default=0.2)
    p.add_argument("--lease-ttl", type=float, default=1.0)
    p.add_argument("--clock-offset", type=float, default=0.0)
    p.add_argument("--for-seconds", type=float, default=0.0, help="take: give up after this")
    args = p.parse_args(argv)
    args.started = time.monotonic()
    return args


def ledger_schema(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS executions (key TEXT, effect INTEGER, pid INTEGER, ts REAL)"
    )
    conn.commit()
    conn.close()


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    if options.clock_offset:
        _skew_clock(options.clock_offset)
    sys.exit(anyio.run(main, options))
