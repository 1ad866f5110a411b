"""The worker process of the crash tests: many durable runs, meant to be killed with SIGKILL.

    python -m tests.crash_worker --store URL --runs N --ledger PATH --generation G [options]

``--mode run`` starts runs ``run-0000`` .. (idempotent by run id, so a restarted
worker re-issuing its starts is harmless) and waits until each has finished or
parked on its interrupt. ``--mode resume`` resumes every parked run with
:func:`answer_for` and waits until all have finished. In both modes, opening the
runtime recovers the runs a killed predecessor left running: its pid is dead,
so their leases are taken over at once.

Every effect goes through :func:`ledger_effect`, a stand-in for an external
service that honours idempotency keys: it keeps its own SQLite ledger (its own
file, WAL, ``synchronous=FULL``) with two tables:

* ``attempts``: one row per execution (key, generation, phase), never deduplicated;
* ``applied``: one row per key (``ON CONFLICT DO NOTHING``), the effect itself.

Both are written in one transaction, and the function returns the applied value
with the id of this execution's ``attempts`` row, so the journal's recorded
result says which execution it recorded. The test compares the journals with the
ledger. The model of what every run must do (:func:`expected_run`) lives here
too, beside the graph it describes.

Progress markers on stdout, one per line: ``READY``, ``PROGRESS <stopped>/<runs> parked=<n>``,
``DONE <status>=<count> ...``; a run that failed is reported as ``FAILED <run_id> <error>``,
and a run found parked with nothing pending (which the engine must never leave behind)
as ``STRANDED <run_id>``.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import anyio

from mainspring import (
    END,
    START,
    Context,
    Graph,
    Retry,
    RunHandle,
    RunStatus,
    Runtime,
    Send,
    append,
)

GRAPH_REF = "tests.crash_worker:app"


# -- the model: what every run must do, whatever the kills ----------------------------------------


def run_id_of(n: int) -> str:
    return f"run-{n:04d}"


def value_of(n: int, effect: str, i: int = 0) -> int:
    """The deterministic value of effect ``effect`` (its ``i``-th instance) in run ``n``."""
    return zlib.crc32(f"{n}:{effect}:{i}".encode()) % 1000


def audited(n: int) -> bool:
    return n % 3 == 0


def parts_of(n: int) -> int:
    """How many parallel ``part`` tasks run ``n`` fans out to (a Send each)."""
    return 2 + n % 3


def part_flaky(n: int, i: int) -> bool:
    """The node fails once after its effect: the retry must reuse the recorded effect."""
    return n % 4 == 2 and i == 0


def total_flaky(n: int) -> bool:
    """The effect itself fails on its node's first attempt, before the far side acts: the
    retry runs it again with the same key (retries keep their keys)."""
    return n % 5 == 1


def needs_approval(n: int, approvals: bool) -> bool:
    return approvals and n % 2 == 0


def answer_for(n: int) -> str:
    return f"approved-{n}"


@dataclass(frozen=True, slots=True)
class ExpectedRun:
    run_id: str
    effects: dict[str, tuple[str, int]]  # idempotency key -> (effect name, value)
    state: dict[str, Any]
    before_interrupt: frozenset[str]  # keys of effects made before the run parks


def expected_run(n: int, approvals: bool) -> ExpectedRun:
    """Mirror of the graph below: the effects run ``n`` makes, by key, and its final state."""
    rid = run_id_of(n)
    effects: dict[str, tuple[str, int]] = {}
    before: set[str] = set()
    trail = ["prepare"]
    state: dict[str, Any] = {"n": n, "approvals": approvals}
    step = 0
    effects[f"{rid}:{step}.0.0"] = ("reserve", value_of(n, "reserve"))
    state["base"] = value_of(n, "reserve")
    if audited(n):
        step += 1
        effects[f"{rid}:{step}.0.0"] = ("audit", value_of(n, "audit"))
        state["audited"] = value_of(n, "audit")
        trail.append("audit")
    step += 1
    parts = [value_of(n, "charge", i) for i in range(parts_of(n))]
    for i, value in enumerate(parts):
        effects[f"{rid}:{step}.{i}.0"] = ("charge", value)
        trail.append(f"part{i}")
    state["parts"] = parts
    step += 1
    total = state["base"] + sum(parts)
    effects[f"{rid}:{step}.0.0"] = ("total", total)
    state["total"] = total
    trail.append("summarize")
    if needs_approval(n, approvals):
        step += 1
        hold_key = f"{rid}:{step}.0.0"
        effects[hold_key] = ("hold", value_of(n, "hold"))
        before = set(effects)
        effects[f"{rid}:{step}.0.1"] = ("capture", value_of(n, "capture"))
        state.update(
            hold=value_of(n, "hold"), approval=answer_for(n), receipt=value_of(n, "capture")
        )
        trail.append("approve")
    if total % 2:
        step += 1
        effects[f"{rid}:{step}.0.0"] = ("notify", value_of(n, "notify"))
        state["notified"] = value_of(n, "notify")
        trail.append("notify")
    state["trail"] = trail
    return ExpectedRun(rid, effects, state, frozenset(before))


# -- the external effect ledger ----------------------------------------------------------------------

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    effect TEXT NOT NULL,
    gen INTEGER NOT NULL,
    phase TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts (key);
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    effect TEXT NOT NULL,
    value INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL
);
"""


def connect_ledger(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class TransientError(Exception):
    """A failure that goes away on the next attempt."""


@dataclass(slots=True)
class _Config:
    ledger: str = ""
    generation: int = 0
    phase: str = "run"
    latency: float = 0.01  # upper bound of the simulated network delay each way, in seconds


CONFIG = _Config()
_local = threading.local()


def _ledger_conn() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        if not CONFIG.ledger:
            raise RuntimeError("the effect ledger is not configured; run this module as the worker")
        conn = _local.conn = connect_ledger(CONFIG.ledger)
    return conn


def ledger_effect(
    run_id: str, effect: str, value: int, attempt: int, *, idempotency_key: str
) -> dict[str, int]:
    """An external side effect that honours its idempotency key (runs in a worker thread)."""
    time.sleep(random.uniform(0, CONFIG.latency))  # the request travels
    if effect == "total" and attempt == 1 and total_flaky(int(run_id[4:])):
        raise TransientError(f"the ledger is briefly unavailable for {idempotency_key}")
    conn = _ledger_conn()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO attempts (key, run_id, effect, gen, phase, ts) VALUES (?, ?, ?, ?, ?, ?)",
            (idempotency_key, run_id, effect, CONFIG.generation, CONFIG.phase, time.time()),
        )
        attempt_id = cur.lastrowid
        assert attempt_id is not None
        conn.execute(
            "INSERT INTO applied (key, run_id, effect, value, attempt_id) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (idempotency_key, run_id, effect, value, attempt_id),
        )
        (applied,) = conn.execute(
            "SELECT value FROM applied WHERE key = ?", (idempotency_key,)
        ).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    time.sleep(random.uniform(0, CONFIG.latency))  # the reply travels: a kill here loses it
    return {"value": int(applied), "exec": int(attempt_id)}


# -- the graph -------------------------------------------------------------------------------------


class Order(TypedDict, total=False):
    n: int
    approvals: bool
    base: int
    audited: int
    parts: Annotated[list[int], append]
    total: int
    hold: int
    approval: str
    receipt: int
    notified: int
    trail: Annotated[list[str], append]


class PartArg(TypedDict):
    n: int
    i: int


async def _think() -> None:
    """Work between effects, so that kills land mid-run."""
    await anyio.sleep(random.uniform(0, CONFIG.latency))


async def _effect(ctx: Context, effect: str, value: int) -> int:
    result: dict[str, int] = await ctx.step(
        effect, ledger_effect, ctx.run_id, effect, value, ctx.attempt
    )
    return result["value"]


def build() -> Graph[Order]:
    g = Graph(Order, name="crash-order")

    @g.node
    async def prepare(s: Order, ctx: Context) -> dict[str, Any]:
        await _think()
        base = await _effect(ctx, "reserve", value_of(s["n"], "reserve"))
        return {"base": base, "trail": ["prepare"]}

    @g.node
    async def audit(s: Order, ctx: Context) -> dict[str, Any]:
        value = await _effect(ctx, "audit", value_of(s["n"], "audit"))
        await _think()
        return {"audited": value, "trail": ["audit"]}

    @g.node(retry=Retry(attempts=2, backoff=0.01))
    async def part(arg: PartArg, ctx: Context) -> dict[str, Any]:
        n, i = arg["n"], arg["i"]
        value = await _effect(ctx, "charge", value_of(n, "charge", i))
        await _think()
        if part_flaky(n, i) and ctx.attempt == 1:
            raise TransientError(f"part {i} of run {n} lost its connection after charging")
        return {"parts": [value], "trail": [f"part{i}"]}

    @g.node(retry=Retry(attempts=3, backoff=0.01))
    async def summarize(s: Order, ctx: Context) -> dict[str, Any]:
        total = await _effect(ctx, "total", s["base"] + sum(s["parts"]))
        return {"total": total, "trail": ["summarize"]}

    @g.node
    async def approve(s: Order, ctx: Context) -> dict[str, Any]:
        n = s["n"]
        hold = await _effect(ctx, "hold", value_of(n, "hold"))
        answer = await ctx.interrupt({"run": n, "hold": hold})
        await _think()
        receipt = await _effect(ctx, "capture", value_of(n, "capture"))
        return {"hold": hold, "approval": answer, "receipt": receipt, "trail": ["approve"]}

    @g.node
    async def notify(s: Order, ctx: Context) -> dict[str, Any]:
        value = await _effect(ctx, "notify", value_of(s["n"], "notify"))
        return {"notified": value, "trail": ["notify"]}

    def fan_out(s: Order) -> list[Send]:
        n = s["n"]
        return [Send("part", PartArg(n=n, i=i)) for i in range(parts_of(n))]

    def after_prepare(s: Order) -> str | list[Send]:
        return "audit" if audited(s["n"]) else fan_out(s)

    def after_summary(s: Order) -> str:
        if needs_approval(s["n"], s["approvals"]):
            return "approve"
        return "notify" if s["total"] % 2 else END

    g.edge(START, "prepare")
    g.branch("prepare", after_prepare)
    g.branch("audit", fan_out)
    g.edge("part", "summarize")
    g.branch("summarize", after_summary, ["approve", "notify", END])
    g.branch("approve", lambda s: "notify" if s["total"] % 2 else END, ["notify", END])
    g.edge("notify", END)
    return g


app = build().compile(ref=GRAPH_REF)


# -- the worker ------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


class _Tally:
    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.stopped: dict[str, RunStatus] = {}
        self.errors: dict[str, str] = {}

    def note(self, run_id: str, status: RunStatus, error: Any) -> None:
        self.stopped[run_id] = status
        if status is RunStatus.FAILED:
            self.errors[run_id] = repr(error)

    async def report_progress(self) -> None:
        while True:
            await anyio.sleep(0.1)
            parked = sum(s is RunStatus.INTERRUPTED for s in self.stopped.values())
            _say(f"PROGRESS {len(self.stopped)}/{self.runs} parked={parked}")


async def _watch(handle: RunHandle, tally: _Tally, slots: anyio.Semaphore | None) -> None:
    try:
        outcome = await handle.wait()
        tally.note(handle.run_id, outcome.status, outcome.error)
    finally:
        if slots is not None:
            slots.release()


async def _drive(rt: Runtime, args: argparse.Namespace, tally: _Tally) -> None:
    slots = anyio.Semaphore(args.max_live)
    async with anyio.create_task_group() as tg:
        tg.start_soon(tally.report_progress)
        async with anyio.create_task_group() as runs:
            for n in range(args.runs):
                run_id = run_id_of(n)
                if args.mode == "run":
                    await slots.acquire()
                    run_input = {"n": n, "approvals": args.approvals, "trail": []}
                    handle = await rt.start(app, run_input, run_id=run_id)
                    runs.start_soon(_watch, handle, tally, slots)
                    continue
                record = await rt.get_run(run_id)
                if record.status is RunStatus.INTERRUPTED:
                    await slots.acquire()
                    if (await rt.outcome(run_id)).interrupts:
                        handle = await rt.resume(run_id, answer_for(n))
                    else:
                        # Must not happen (test_crash asserts no STRANDED line): a resumed run is
                        # marked running as its resume commits. Continue it the documented way.
                        _say(f"STRANDED {run_id}")
                        handle = await rt.resume(run_id)
                    runs.start_soon(_watch, handle, tally, slots)
                else:  # finished, or running again (recovered on open)
                    runs.start_soon(_watch, rt.handle(run_id), tally, None)
        tg.cancel_scope.cancel()


def _report(tally: _Tally) -> None:
    for run_id, error in sorted(tally.errors.items()):
        _say(f"FAILED {run_id} {error}")
    counts: dict[str, int] = {}
    for status in tally.stopped.values():
        counts[status.value] = counts.get(status.value, 0) + 1
    _say("DONE " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))


async def work(args: argparse.Namespace) -> int:
    """Exit status: 0 when every run has stopped (finished or parked), 3 if some failed."""
    CONFIG.ledger = args.ledger
    CONFIG.generation = args.generation
    CONFIG.phase = args.mode
    CONFIG.latency = args.latency
    random.seed(f"{args.seed}:{args.generation}")
    setup = connect_ledger(args.ledger)
    setup.executescript(LEDGER_SCHEMA)
    setup.close()
    tally = _Tally(args.runs)
    runtime = Runtime.open(args.store, durability=args.durability, graphs=[app], recover="resume")
    async with runtime as rt:
        _say(f"READY pid={os.getpid()} generation={args.generation}")
        await _drive(rt, args, tally)
    _report(tally)
    return 3 if tally.errors else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.crash_worker",
        description="Crash-test worker: many durable runs with ledger effects.",
    )
    p.add_argument("--store", required=True, help="store URL (sqlite:///... or postgresql://...)")
    p.add_argument("--runs", type=int, required=True, help="number of runs: run-0000 ..")
    p.add_argument("--ledger", required=True, help="path of the external effect ledger (SQLite)")
    p.add_argument("--generation", type=int, default=0, help="which incarnation this worker is")
    p.add_argument("--mode", choices=("run", "resume"), default="run")
    p.add_argument("--durability", choices=("sync", "batch"), default="sync")
    p.add_argument("--approvals", action="store_true", help="even runs park on an interrupt")
    p.add_argument("--max-live", type=int, default=60, help="runs started but not yet stopped")
    p.add_argument("--latency", type=float, default=0.01, help="max simulated delay, seconds")
    p.add_argument("--seed", default="0")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return anyio.run(work, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
