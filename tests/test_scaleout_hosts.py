"""Many hosts for real (issue 16): three ``mainspring worker`` processes, each in a network
namespace of its own, drive one queue on the one PostgreSQL; one is killed, one is cut off
past its lease and comes back; every run still finishes exactly once.

The graph (tests/scaleout_graphs.py) makes three durable effects per run; each execution
is a row in ``effect_attempts`` (never deduplicated) and the effect applied is a row in
``effects`` (one per idempotency key). The test checks:

- every run finished, with one ``finished`` event, and one recorded result per effect;
- every effect was applied once, and executed once, except in the runs the lost workers
  held: there it may have run again, with the same idempotency key (a worker that dies
  between an effect and its journal entry cannot say whether it ran);
- the partitioned worker was fenced: none of the executions it made after it was cut off
  (it could write nothing before the takeover) is the result the journal kept.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mainspring import Runtime
from tests.netns import Lab, Spawned, hosts
from tests.scaleout_graphs import SINK_DDL, STEPS, app

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

RUNS = 60
PAUSE = 0.3  # after each effect: a run lasts about a second, so workers hold runs when hit
LEASE_TTL = 2.0
DEADLINE = 90.0  # for each wait; generous: they end on a condition, not a clock


async def _until(what: str, check: Callable[[], Awaitable[bool]], lab: Lab) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.log.name}\n{s.output()[-3000:]}" for s in lab.spawned)
            raise AssertionError(f"timed out waiting until {what}\n{logs}")
        await anyio.sleep(0.05)


def _worker(lab: Lab, index: int, store: str, sink: str, schema: str) -> Spawned:
    argv = [sys.executable, "-m", "mainspring", "worker", "--store", store, "--queue", "q"]
    argv += ["--concurrency", "4", "--graph", "tests.scaleout_graphs:app"]
    argv += ["--lease-ttl", str(LEASE_TTL)]
    env = {"SCALEOUT_SINK": sink, "SCALEOUT_SCHEMA": schema, "SCALEOUT_WORKER": f"w{index}"}
    return lab.spawn(lab.hosts[index], argv, env)


async def test_runs_finish_exactly_once_across_killed_and_partitioned_hosts(
    postgres_url: str,
) -> None:
    import asyncpg

    schema = postgres_url.rpartition("schema=")[2]
    base = postgres_url.partition("?")[0]
    with hosts(3) as lab:
        async with Runtime.open(postgres_url, graphs=[app], recover="off") as rt:
            db = await asyncpg.connect(base)
            try:
                for ddl in SINK_DDL:
                    await db.execute(ddl.format(s=f'"{schema}"'))
                await _scenario(lab, rt, db, schema)
            finally:
                await db.close()


async def _scenario(lab: Lab, rt: Runtime, db: Any, schema: str) -> None:
    s = f'"{schema}"'
    store, sink = lab.postgres_url("test", schema), lab.postgres_url("test")
    workers = [_worker(lab, i, store, sink, schema) for i in range(3)]
    killed, cut, _ = workers
    run_ids = [f"so-{n:03d}" for n in range(RUNS)]
    for run_id in run_ids:
        await rt.start(app, {"pause": PAUSE}, run_id=run_id, queue="q")

    async def held_by(worker: Spawned) -> set[str]:
        rows = await db.fetch(
            f"SELECT run_id FROM {s}.runs WHERE status = 'running' AND split_part(owner, ':', 2) = $1",
            str(worker.pid),
        )
        return {r["run_id"] for r in rows}

    async def finished() -> int:
        return int(await db.fetchval(f"SELECT count(*) FROM {s}.runs WHERE status = 'finished'"))

    async def both_busy() -> bool:
        return await finished() >= 10 and bool(await held_by(killed)) and bool(await held_by(cut))

    await _until("10 runs finished and the two victims hold runs", both_busy, lab)
    lab.kill(killed, signal.SIGKILL)
    lab.partition(cut.host)
    cut_at = await db.fetchval("SELECT clock_timestamp()")
    suspects = await held_by(killed) | await held_by(cut)
    held_by_cut = await held_by(cut)

    async def taken_over() -> bool:
        return not (await held_by(cut)) & held_by_cut

    await _until("the runs of the cut-off worker are taken over", taken_over, lab)
    lab.heal(cut.host)

    async def all_finished() -> bool:
        return await finished() == RUNS

    await _until(f"all {RUNS} runs finished", all_finished, lab)
    for worker in workers[1:]:
        lab.kill(worker, signal.SIGTERM)
    for worker in workers[1:]:
        with anyio.fail_after(DEADLINE):
            while worker.proc.poll() is None:
                await anyio.sleep(0.05)
    await _check(db, s, run_ids, suspects, cut, cut_at, lab)


async def _check(
    db: Any, s: str, run_ids: list[str], suspects: set[str], cut: Spawned, cut_at: Any, lab: Lab
) -> None:
    logs = "\n".join(f"--- {w.log.name}\n{w.output()[-3000:]}" for w in lab.spawned)
    statuses = {r["run_id"]: r["status"] for r in await db.fetch(f"SELECT * FROM {s}.runs")}
    assert statuses == dict.fromkeys(run_ids, "finished"), logs
    terminal = Counter(
        r["run_id"]
        for r in await db.fetch(
            f"SELECT run_id FROM {s}.events WHERE kind IN ('finished', 'failed', 'cancelled')"
        )
    )
    assert terminal == Counter(run_ids), "one terminal event, 'finished', per run"

    # The journal's results: one per (run, effect), each an execution in the sink.
    kept: dict[tuple[str, str], str] = {}
    for row in await db.fetch(
        f"SELECT run_id, data FROM {s}.events WHERE kind = 'effect_finished'"
    ):
        data = json.loads(row["data"])
        key = (row["run_id"], data["name"])
        assert key not in kept, f"two recorded results for {key}"
        kept[key] = data["result"]
    assert set(kept) == {(r, step) for r in run_ids for step in STEPS}

    attempts = await db.fetch(f"SELECT * FROM {s}.effect_attempts")
    by_effect: dict[tuple[str, str], list[Any]] = {}
    for a in attempts:
        by_effect.setdefault((a["run_id"], a["step"]), []).append(a)
    applied = await db.fetch(f"SELECT * FROM {s}.effects")
    assert sorted((a["run_id"], a["step"]) for a in applied) == sorted(kept)
    for effect, rows in by_effect.items():
        assert len({a["key"] for a in rows}) == 1, f"{effect}: one idempotency key"
        assert len(rows) == 1 or effect[0] in suspects, f"{effect} ran {len(rows)} times"
        assert kept[effect] in {a["attempt"] for a in rows}
    late = {a["attempt"] for a in attempts if a["pid"] == cut.pid and a["at"] > cut_at}
    assert not late & set(kept.values()), "the fenced worker's late results were kept"
