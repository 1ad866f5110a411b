"""Many hosts for real (issue 16): three ``mainspring worker`` processes, each in a network
namespace of its own, drive one queue on the one PostgreSQL; one is killed, one is cut off
past its lease and comes back; every run still finishes exactly once.

The graph (tests/scaleout_graphs.py) makes three durable effects per run; each execution
is a row in ``effect_attempts`` (never deduplicated) and the effect applied is a row in
``effects`` (one per idempotency key). Two workers stop at a gate in effect ``b``: the one
to be killed after applying it (so its runs' ``b`` must run again), the one to be cut off
before (so it applies ``b`` late, after its runs were taken over). The test checks:

- every run finished, with one terminal event, ``finished``, and one recorded result per
  effect; every effect applied once;
- every effect executed once, except in the runs the two victims held: there ``b`` ran
  again, under the same idempotency key (a worker that dies between an effect and its
  journal entry leaves nobody who knows whether it ran: effects are at least once, and a
  sink that deduplicates by the key makes them exactly once);
- the cut-off worker was fenced: it wrote ``b`` after the takeover, and the journal kept
  the new owner's result, not its own; it lived on, and drained cleanly on SIGTERM;
- an API server (``mainspring serve``) on a fourth host shows every run finished.

A second test kills a host inside a claim's transaction (the queue's row locked): the
other workers go on once the server ends the dead session, not when TCP gives up.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from mainspring import Runtime
from tests.netns import Lab, Spawned, hosts
from tests.scaleout_graphs import GATED, SINK_DDL, STEPS, app

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

RUNS = 60
PAUSE = 0.1  # after each effect
LEASE_TTL = 2.0
DEADLINE = 90.0  # for each wait; generous: they end on a condition, not a clock
GATES = ("write-then-wait", "wait-then-write", "")  # workers w0 (killed), w1 (cut off), w2
API_PORT = 8000  # the API server's, in its own namespace (hence no clash with anything)


@dataclass(frozen=True)
class Victims:
    """What the test did to whom: the runs each victim had at the gate, when it was cut off."""

    killed: Spawned
    cut: Spawned
    cut_at: Any  # the database's clock
    killed_at_gate: set[str]
    cut_at_gate: set[str]
    held: set[str]  # every run either held when hit


class Db:
    """The test's own queries, on a connection made again when it breaks: other tests on a
    shared machine may restart PostgreSQL meanwhile (the workers reconnect; so do we)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    async def _call(self, method: str, *args: Any) -> Any:
        import asyncpg

        # InternalClientError: a connection left mid-operation by a restart's broken pipe.
        lost = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                asyncpg.PostgresConnectionError,
                asyncpg.exceptions.OperatorInterventionError)  # fmt: skip
        for _ in range(120):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.url, timeout=10)
                return await getattr(self._conn, method)(*args)
            except lost:
                if self._conn is not None:
                    self._conn.terminate()
                self._conn = None
                await anyio.sleep(0.5)
        raise AssertionError(f"PostgreSQL at {self.url} unreachable for a minute")

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._call("fetch", query, *args)
        return rows

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, *args)

    async def execute(self, query: str, *args: Any) -> None:
        await self._call("execute", query, *args)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def _until(what: str, check: Callable[[], Awaitable[bool]], lab: Lab) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{_logs(lab)}")
        await anyio.sleep(0.05)


def _logs(lab: Lab) -> str:
    return "\n".join(f"--- {s.log.name}\n{s.output()[-3000:]}" for s in lab.spawned)


def _worker(lab: Lab, index: int, schema: str, gate: str = "", options: str = "") -> Spawned:
    """``mainspring worker`` on host ``index``; ``options``: more of the store URL's query."""
    argv = [sys.executable, "-m", "mainspring", "worker", "--queue", "q", "--concurrency", "4"]
    argv += ["--graph", "tests.scaleout_graphs:app", "--lease-ttl", str(LEASE_TTL)]
    argv += ["--store", lab.postgres_url("test", schema) + options]
    env = {
        "SCALEOUT_SINK": lab.postgres_url("test"),
        "SCALEOUT_SCHEMA": schema,
        "SCALEOUT_WORKER": f"w{index}",
        "SCALEOUT_GATE": gate,
    }
    return lab.spawn(lab.hosts[index], argv, env)


def _api_server(lab: Lab, schema: str) -> tuple[Spawned, str, dict[str, str]]:
    """``mainspring serve`` on the fourth host, with a read key; its URL and headers."""
    store = lab.postgres_url("test", schema)
    base = [sys.executable, "-m", "mainspring"]
    made = lab.run(lab.hosts[3], [*base, "keys", "create", "--tenant", "*", "--scopes", "read",
                                  "--store", store, "--json"])  # fmt: skip
    headers = {"Authorization": f"Bearer {json.loads(made)['key']}"}
    argv = [*base, "serve", "--store", store, "--graph", "tests.scaleout_graphs:app"]
    server = lab.spawn(lab.hosts[3], [*argv, "--host", "0.0.0.0", "--port", str(API_PORT)])
    return server, f"http://{lab.hosts[3].address}:{API_PORT}", headers


async def _check_api(lab: Lab, url: str, headers: dict[str, str], run_ids: list[str]) -> None:
    """The API server, a host of its own, sees every run finished, with the journal's results."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def up() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await _until("the API server answers", up, lab)
        for run_id in run_ids:
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "finished", run
            done = run["outcome"]["state"]["done"]
            assert len(done) == len(STEPS), run


async def test_runs_finish_exactly_once_across_killed_and_partitioned_hosts(
    postgres_url: str,
) -> None:
    schema = postgres_url.rpartition("schema=")[2]
    with hosts(4) as lab:
        # This process only starts runs: it takes over none (recover="off").
        async with Runtime.open(postgres_url, graphs=[app], recover="off") as rt:
            db = Db(postgres_url.partition("?")[0])
            try:
                for ddl in SINK_DDL:
                    await db.execute(ddl.format(s=f'"{schema}"'))
                server, api, headers = _api_server(lab, schema)
                workers = [_worker(lab, i, schema, GATES[i]) for i in range(3)]
                run_ids = [f"so-{n:03d}" for n in range(RUNS)]
                for run_id in run_ids:
                    await rt.start(app, {"pause": PAUSE}, run_id=run_id, queue="q")
                victims = await _hit(lab, db, f'"{schema}"', workers)
                await _check(lab, db, f'"{schema}"', run_ids, victims)
                await _check_api(lab, api, headers, run_ids)
                lab.kill(server, signal.SIGTERM)
            finally:
                await db.close()


async def _hit(lab: Lab, db: Db, s: str, workers: list[Spawned]) -> Victims:
    """Kill w0 and cut w1 off while both wait at the gate; heal w1 once its runs are taken
    over; let every run finish and w1 write late; stop the survivors with SIGTERM."""
    killed, cut, _ = workers

    async def held_by(worker: Spawned) -> set[str]:
        rows = await db.fetch(
            f"SELECT run_id FROM {s}.runs WHERE status = 'running'"
            " AND split_part(owner, ':', 2) = $1",
            str(worker.pid),
        )
        return {r["run_id"] for r in rows}

    async def at_gate(worker: Spawned) -> set[str]:
        rows = await db.fetch(f"SELECT run_id FROM {s}.gate_waits WHERE pid = $1", worker.pid)
        return {r["run_id"] for r in rows}

    async def finished() -> int:
        return int(await db.fetchval(f"SELECT count(*) FROM {s}.runs WHERE status = 'finished'"))

    async def mid_way() -> bool:
        return await finished() >= 10 and bool(await at_gate(killed)) and bool(await at_gate(cut))

    await _until("10 runs finished and both victims wait at the gate", mid_way, lab)
    lab.kill(killed, signal.SIGKILL)
    lab.partition(cut.host)
    victims = Victims(
        killed,
        cut,
        await db.fetchval("SELECT clock_timestamp()"),
        await at_gate(killed),
        await at_gate(cut),
        await held_by(killed) | await held_by(cut),
    )
    cut_held = await held_by(cut)

    async def taken_over() -> bool:
        return not (await held_by(cut)) & cut_held

    await _until("the runs of the cut-off worker are taken over", taken_over, lab)
    await db.execute(f"INSERT INTO {s}.gate DEFAULT VALUES")
    lab.heal(cut.host)

    async def done() -> bool:
        late = await db.fetchval(
            f"SELECT count(*) FROM {s}.effect_attempts WHERE pid = $1 AND at > $2",
            cut.pid,
            victims.cut_at,
        )
        return await finished() == RUNS and late >= len(victims.cut_at_gate)

    await _until("every run finished and the cut-off worker wrote late", done, lab)
    for worker in workers[1:]:
        lab.kill(worker, signal.SIGTERM)
    with anyio.fail_after(DEADLINE):
        while any(worker.proc.poll() is None for worker in workers[1:]):
            await anyio.sleep(0.05)
    # The cut-off worker lived through it, and both drained cleanly.
    assert [w.proc.returncode for w in workers[1:]] == [0, 0], _logs(lab)
    return victims


async def _check(lab: Lab, db: Db, s: str, run_ids: list[str], victims: Victims) -> None:
    statuses = {r["run_id"]: r["status"] for r in await db.fetch(f"SELECT * FROM {s}.runs")}
    assert statuses == dict.fromkeys(run_ids, "finished"), _logs(lab)
    terminal = await db.fetch(
        f"SELECT run_id, kind FROM {s}.events WHERE kind IN ('finished', 'failed', 'cancelled')"
    )
    assert Counter((r["run_id"], r["kind"]) for r in terminal) == Counter(
        (run_id, "finished") for run_id in run_ids
    )

    # The journal's results: one per (run, effect), each an execution the sink saw.
    kept: dict[tuple[str, str], str] = {}
    for row in await db.fetch(
        f"SELECT run_id, data FROM {s}.events WHERE kind = 'effect_finished'"
    ):
        effect = (row["run_id"], json.loads(row["data"])["name"])
        assert effect not in kept, f"two recorded results for {effect}"
        kept[effect] = json.loads(row["data"])["result"]
    assert set(kept) == {(r, step) for r in run_ids for step in STEPS}
    applied = await db.fetch(f"SELECT run_id, step FROM {s}.effects")
    assert sorted((a["run_id"], a["step"]) for a in applied) == sorted(kept)

    runs: dict[tuple[str, str], list[Any]] = {}
    for a in await db.fetch(f"SELECT * FROM {s}.effect_attempts ORDER BY at"):
        runs.setdefault((a["run_id"], a["step"]), []).append(a)
    for effect, rows in runs.items():
        assert len({a["key"] for a in rows}) == 1, f"{effect}: one idempotency key"
        assert len(rows) == 1 or effect[0] in victims.held, f"{effect} ran {len(rows)} times"
        assert kept[effect] in {a["attempt"] for a in rows}
    # Each victim lost its runs with its lease expired: a death each.
    gated = victims.killed_at_gate | victims.cut_at_gate
    assert victims.killed_at_gate and victims.cut_at_gate
    deaths = await db.fetch(f"SELECT run_id, deaths FROM {s}.runs WHERE run_id = ANY($1)", gated)
    assert all(r["deaths"] >= 1 for r in deaths) and len(deaths) == len(gated)
    # The killed worker applied b and died before journaling it: b ran again elsewhere. The
    # cut-off worker applied b after the takeover (before or after the new owner ran it
    # again: the sink took the first): its result was refused, the new owner's kept.
    for victim, at_gate in (
        (victims.killed, victims.killed_at_gate),
        (victims.cut, victims.cut_at_gate),
    ):
        for run_id in at_gate:
            rows = runs[(run_id, GATED)]
            mine = [a for a in rows if a["pid"] == victim.pid]
            assert len(rows) == 2 and len(mine) == 1, f"{run_id}: {rows}"
            assert kept[(run_id, GATED)] != mine[0]["attempt"]
            if victim is victims.cut:
                assert mine[0]["at"] > victims.cut_at


async def test_a_host_that_dies_inside_a_claim_does_not_stall_the_queue(postgres_url: str) -> None:
    """A worker's claim of a queue with limits locks the queue's row. Its host dies (cut off,
    then killed) just as the claim gets the lock: its backend is left idle in the
    transaction, holding the row, and TCP would take many minutes to tell. Every other
    worker's claim waits on that row, so the store ends sessions idle in a transaction
    past ``call_timeout``: the queue goes on after that, not after TCP gives up."""
    import asyncpg

    schema = postgres_url.rpartition("schema=")[2]
    s = f'"{schema}"'
    with hosts(2) as lab:
        async with Runtime.open(postgres_url, graphs=[app], recover="off") as rt:
            db = Db(postgres_url.partition("?")[0])
            try:
                for ddl in SINK_DDL:
                    await db.execute(ddl.format(s=s))
                store = lab.postgres_url("test", schema)
                queue = [sys.executable, "-m", "mainspring", "queue", "set", "q"]
                lab.run(lab.hosts[1], [*queue, "--concurrency", "100", "--store", store])
                doomed = _worker(lab, 0, schema, options="&call_timeout=2&retry_for=10")

                async def started() -> bool:
                    return bool(await db.fetchval(f"SELECT count(*) FROM {s}.workers"))

                await _until("the first worker is up", started, lab)
                holder = await asyncpg.connect(postgres_url.partition("?")[0])
                claim = holder.transaction()
                await claim.start()
                await holder.execute(f"SELECT 1 FROM {s}.queues WHERE name = 'q' FOR UPDATE")
                await rt.start(app, {"pause": 0.0}, run_id="stall-0", queue="q")

                async def claim_waits() -> bool:
                    return bool(await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%' || $1 || '.queues%FOR UPDATE%'", s,
                    ))  # fmt: skip

                await _until("the worker's claim waits for the queue's row", claim_waits, lab)
                lab.partition(doomed.host)
                lab.kill(doomed, signal.SIGKILL)
                await claim.commit()  # its backend gets the row, for a client that is gone
                await holder.close()
                _worker(lab, 1, schema)
                run_ids = [f"stall-{n}" for n in range(5)]
                for run_id in run_ids[1:]:
                    await rt.start(app, {"pause": 0.0}, run_id=run_id, queue="q")

                async def all_finished() -> bool:
                    done = f"SELECT count(*) FROM {s}.runs WHERE status = 'finished'"
                    return int(await db.fetchval(done)) == len(run_ids)

                await _until("the other worker finished every run", all_finished, lab)
                finished = await db.fetch(f"SELECT run_id FROM {s}.events WHERE kind = 'finished'")
                assert sorted(r["run_id"] for r in finished) == run_ids
            finally:
                await db.close()
