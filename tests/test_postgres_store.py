"""PostgreSQL-specific behaviour of the Postgres store, on a real server.

The shared contract is checked by the conformance suite; these tests cover what
only a server has: schema refusal and migration races between processes, two
processes racing on one run, a server restart and killed connections under
load, lost commit replies, group commit across runs, NOTIFY, and connection
errors. Each test works in its own schema and drops it afterwards.

PostgreSQL is taken from MAINSPRING_PG_URL (default: the local test server).
If it is unreachable the tests skip, unless MAINSPRING_REQUIRE_SERVICES=1
(see conftest.require_postgres).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import asyncpg
import orjson
import pytest

from mainspring.errors import (
    ConflictError,
    NotAStoreError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from mainspring.events import Event, EventKind, StepFinished
from mainspring.store import Durability, RunRecord, RunStatus, store_from_url
from mainspring.store._pg_schema import SCHEMA_VERSION
from mainspring.store.postgres import PostgresStore
from tests.conftest import PG_URL, drop_postgres_schema, require_postgres
from tests.journal_data import event

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> str:
    return require_postgres()  # skips, or fails under MAINSPRING_REQUIRE_SERVICES=1


# -- helpers -------------------------------------------------------------------------------------


def _url(schema: str, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}{query}"


async def _admin(sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_URL)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def _run(run_id: str, **kw: Any) -> RunRecord:
    now = time.time()
    return RunRecord(run_id, "graph", kw.pop("thread", None), RunStatus.RUNNING, now, now, **kw)


def _step(run_id: str, seq: int, **data: Any) -> Event:
    return event(run_id, seq, EventKind.STEP_FINISHED, time.time(), data)


def _update(event: Event) -> Any:
    assert isinstance(event.data, StepFinished)
    return event.data.update


async def _create(store: PostgresStore, run_id: str) -> None:
    start = event(run_id, 1, EventKind.RUN_STARTED, time.time())
    await store.create_run(_run(run_id), [start], Durability.SYNC)


async def _assert_gap_free(store: PostgresStore, run_id: str, last_seq: int) -> list[Event]:
    events = await store.read(run_id)
    assert [e.seq for e in events] == list(range(1, last_seq + 1)), run_id
    record = await store.get_run(run_id)
    assert record is not None and record.last_seq == last_seq
    return events


async def _catalog(schema: str) -> list[tuple[Any, ...]]:
    """Relations and their columns in a schema: to prove a refusal changed nothing."""
    rows = await _admin(
        "SELECT c.relname, c.relkind, a.attname, a.atttypid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        "WHERE n.nspname = $1 ORDER BY 1, 3",
        schema,
    )
    return [tuple(r) for r in rows]


@pytest.fixture
async def schema(pg_url: str) -> AsyncIterator[str]:
    name = f"ms_t_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_postgres_schema(pg_url, name)


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(_url(schema)) as s:
        yield s


def _with(url: str, **changes: str) -> str:
    return urlunsplit(urlsplit(url)._replace(**changes))


# -- configuration -------------------------------------------------------------------------------


def test_url_options_and_precedence() -> None:
    url = _url("ms_x", retry_for=5, min_size=1, max_size=3, batch_window=0.01, call_timeout=3)
    s = PostgresStore(url, retry_for=7.5)
    assert s.call_timeout == 3
    assert (s.target.schema, s.retry_for, s.min_size, s.max_size, s.batch_window) == (
        "ms_x", 7.5, 1, 3, 0.01,
    )  # fmt: skip
    assert isinstance(store_from_url(url.replace("postgresql://", "postgres://")), PostgresStore)
    assert PostgresStore(PG_URL).target.schema == "mainspring"


@pytest.mark.parametrize(
    "bad", ["schema=bad-name", "schema=1abc", "retry_for=soon", "max_size=0", "call_timeout=0"]
)
def test_bad_url_options_are_refused(bad: str) -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore(f"{PG_URL}?{bad}")
    assert "\n" not in str(info.value)


def test_store_needs_opening() -> None:  # no server needed
    async def use() -> None:
        await PostgresStore(PG_URL).get_run("x")

    with pytest.raises(StoreError, match="not open"):
        asyncio.run(use())


# -- schema: creation, refusal, migration races --------------------------------------------------


async def test_open_creates_a_marked_schema_and_reopens(schema: str) -> None:
    async with PostgresStore(_url(schema)):
        pass
    meta = dict(tuple(r) for r in await _admin(f"SELECT key, value FROM {schema}.meta"))
    assert meta == {"application": "mainspring", "schema_version": str(SCHEMA_VERSION)}
    before = await _catalog(schema)
    async with PostgresStore(_url(schema)) as again:
        await _create(again, "r")
    assert await _catalog(schema) == before


async def test_empty_existing_schema_is_adopted(schema: str) -> None:
    await _admin(f"CREATE SCHEMA {schema}")  # made by a DBA for this role
    async with PostgresStore(_url(schema)) as s:
        await _create(s, "r")


async def test_newer_schema_is_refused_untouched(schema: str) -> None:
    async with PostgresStore(_url(schema)) as s:
        await _create(s, "r")
    await _admin(f"UPDATE {schema}.meta SET value = '999' WHERE key = 'schema_version'")
    before = await _catalog(schema)
    with pytest.raises(SchemaVersionError, match="newer") as info:
        await PostgresStore(_url(schema)).open()
    assert "\n" not in str(info.value)
    assert await _catalog(schema) == before
    assert len(await _admin(f"SELECT * FROM {schema}.events")) == 1


@pytest.mark.parametrize(
    "foreign",
    [
        "CREATE TABLE {s}.customers (id int PRIMARY KEY, name text)",
        "CREATE TABLE {s}.meta (k int)",  # a foreign table that happens to be called meta
        "CREATE TABLE {s}.meta (key text, value text); INSERT INTO {s}.meta VALUES ('app', 'x')",
    ],
)
async def test_foreign_schema_is_refused_untouched(schema: str, foreign: str) -> None:
    await _admin(f"CREATE SCHEMA {schema}")
    for statement in foreign.format(s=schema).split(";"):
        await _admin(statement)
    before = await _catalog(schema)
    with pytest.raises(NotAStoreError, match="not a Mainspring store") as info:
        await PostgresStore(_url(schema)).open()
    assert "\n" not in str(info.value)
    assert await _catalog(schema) == before


def _open_at(url: str, start_at: float, results: Any) -> None:
    """Child process: open the store at the agreed moment, report the outcome."""

    async def main() -> None:
        await anyio.sleep(max(0.0, start_at - time.time()))
        async with PostgresStore(url):
            pass

    try:
        anyio.run(main)
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


async def test_concurrent_first_open_from_many_processes(schema: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 3.0  # after every child has started up
    procs = [ctx.Process(target=_open_at, args=(_url(schema), start_at, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [await anyio.to_thread.run_sync(results.get, True, 60) for _ in procs]
    for p in procs:
        await anyio.to_thread.run_sync(p.join, 10)
    assert outcomes == ["ok"] * len(procs)
    meta = await _admin(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'")
    assert meta[0][0] == str(SCHEMA_VERSION)


# -- one writer per run, across processes --------------------------------------------------------


def _contend(url: str, run_id: str, name: str, rounds: int, barrier: Any, results: Any) -> None:
    """Child process: each round, append at the same expected seq as the other child."""

    async def main() -> list[int]:
        wins = []
        async with PostgresStore(url) as store:
            for k in range(rounds):
                await anyio.to_thread.run_sync(barrier.wait)
                step = _step(run_id, k + 2, by=name)
                try:
                    await store.append(run_id, k + 1, [step])
                    wins.append(k)
                except ConflictError as exc:
                    assert exc.actual_seq == k + 2
        return wins

    try:
        results.put((name, anyio.run(main)))
    except BaseException as exc:
        results.put((name, f"{type(exc).__name__}: {exc}"))
        barrier.abort()


async def test_two_processes_racing_on_one_run_never_fork(
    store: PostgresStore, schema: str
) -> None:
    rounds = 40
    await _create(store, "shared")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_contend, args=(_url(schema), "shared", name, rounds, barrier, results))
        for name in ("a", "b")
    ]
    for p in procs:
        p.start()
    outcome = dict([await anyio.to_thread.run_sync(results.get, True, 120) for _ in procs])
    for p in procs:
        await anyio.to_thread.run_sync(p.join, 10)
    wins_a, wins_b = outcome["a"], outcome["b"]
    assert isinstance(wins_a, list) and isinstance(wins_b, list), outcome
    assert sorted(wins_a + wins_b) == list(range(rounds))  # exactly one winner per round
    events = await _assert_gap_free(store, "shared", rounds + 1)
    winners = {k: "a" for k in wins_a} | {k: "b" for k in wins_b}
    assert [_update(e)["by"] for e in events[1:]] == [winners[k] for k in range(rounds)]


# -- failures under load: server restart, killed connections -------------------------------------


class _Load:
    """Many runs appending concurrently (sync, batch and off) until told to stop."""

    def __init__(self, store: PostgresStore, runs: int) -> None:
        self.store = store
        self.ids = [f"load-{i}" for i in range(runs)]
        modes = (Durability.SYNC, Durability.BATCH, Durability.OFF)
        self.durability = {rid: modes[i % 3] for i, rid in enumerate(self.ids)}
        self.appended = dict.fromkeys(self.ids, 0)
        self.stop = anyio.Event()

    async def drive(self, run_id: str, min_steps: int) -> None:
        n = 0
        while not self.stop.is_set() or n < min_steps:
            event = _step(run_id, n + 2, n=n)
            await self.store.append(run_id, n + 1, [event], durability=self.durability[run_id])
            n += 1
            self.appended[run_id] = n
            await anyio.sleep(0.002)

    async def run(self, disturb: Callable[[], Awaitable[None]], min_steps: int = 20) -> None:
        for rid in self.ids:
            await _create(self.store, rid)
        async with anyio.create_task_group() as tg:
            for rid in self.ids:
                tg.start_soon(self.drive, rid, min_steps)
            await anyio.sleep(0.3)  # load is flowing
            await disturb()
            await anyio.sleep(0.3)  # and flows again afterwards
            self.stop.set()
        await self.store.flush()

    async def check(self) -> None:
        for rid, n in self.appended.items():
            events = await _assert_gap_free(self.store, rid, n + 1)
            assert [_update(e)["n"] for e in events[1:]] == list(range(n))


_CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]


def _can_restart_server() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql/15/main"):
        return "needs the local PostgreSQL 15 cluster and pg_ctlcluster"
    if "127.0.0.1" not in PG_URL and "localhost" not in PG_URL:
        return "MAINSPRING_PG_URL is not the local cluster"
    return None


@pytest.mark.skipif(_can_restart_server() is not None, reason=str(_can_restart_server()))
async def test_server_restart_under_load(schema: str, caplog: pytest.LogCaptureFixture) -> None:
    async def restart() -> None:
        with anyio.CancelScope(shield=True):  # never leave the server half restarted
            done = await anyio.run_process([*_CLUSTER, "restart"], check=False)
        assert done.returncode == 0, done.stderr.decode()

    try:
        async with PostgresStore(_url(schema, retry_for=60)) as store:
            load = _Load(store, runs=60)
            await load.run(restart)
            await load.check()
    finally:
        if subprocess.run([*_CLUSTER, "status"], capture_output=True).returncode != 0:
            subprocess.run([*_CLUSTER, "start"], check=True)
    assert "unavailable" in caplog.text  # the restart was felt, and ridden out
    assert "available again" in caplog.text


async def test_killed_connections_under_load(schema: str, caplog: pytest.LogCaptureFixture) -> None:
    app = f"ms_t_{uuid.uuid4().hex[:8]}"
    killed = 0

    async def kill_backends() -> None:
        nonlocal killed
        for _ in range(3):
            rows = await _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                app,
            )
            killed += len(rows)
            await anyio.sleep(0.15)

    async with PostgresStore(_url(schema, retry_for=30, application_name=app)) as store:
        load = _Load(store, runs=30)
        await load.run(kill_backends)
        await load.check()
    assert killed > 0


class _Proxy:
    """A TCP proxy to PostgreSQL that can cut every connection and refuse new ones, or
    swallow what clients send (``deaf``) as a dead network path would, or silence just the
    connections open now (``silence_open_links``) while new ones work."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.up = host, port, True
        self.deaf = False
        self.local_port = 0
        self._links: set[anyio.CancelScope] = set()
        self._silenced: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.local_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._link)

    async def _link(self, client: anyio.abc.SocketStream) -> None:
        try:
            async with client:
                if not self.up:
                    return  # accepted, then closed at once: an unreachable server
                async with await anyio.connect_tcp(self.host, self.port) as server:
                    async with anyio.create_task_group() as tg:
                        self._links.add(tg.cancel_scope)
                        tg.start_soon(self._pump, client, server, tg.cancel_scope, True)
                        tg.start_soon(self._pump, server, client, tg.cancel_scope, False)
                    self._links.discard(tg.cancel_scope)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # a link that breaks is what this proxy is for; it must not stop the others

    async def _pump(
        self,
        src: anyio.abc.SocketStream,
        dst: anyio.abc.SocketStream,
        scope: anyio.CancelScope,
        to_server: bool,
    ) -> None:
        try:
            async for chunk in src:
                if not (to_server and self.deaf) and scope not in self._silenced:
                    await dst.send(chunk)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()

    def cut(self) -> None:
        self.up = False
        for scope in list(self._links):
            scope.cancel()

    def silence_open_links(self) -> None:
        """Drop what either side sends on every connection open now, as a router or NAT that
        lost their state would; connections opened later pass."""
        self._silenced |= self._links


@pytest.fixture
async def proxy() -> AsyncIterator[_Proxy]:
    parts = urlsplit(PG_URL)
    p = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    async with anyio.create_task_group() as tg:
        await tg.start(p.serve)
        yield p
        tg.cancel_scope.cancel()


async def test_outage_longer_than_retry_for_raises_unavailable(schema: str, proxy: _Proxy) -> None:
    url = _with(_url(schema, retry_for=1), netloc=f"postgres@127.0.0.1:{proxy.local_port}")
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="unreachable for") as info:
            await store.append("r", 1, [_step("r", 2)])
        assert 1.0 <= time.monotonic() - started < 10
        assert "\n" not in str(info.value)
        proxy.up = True  # the server is back: the store recovers by itself
        await store.append("r", 1, [_step("r", 2)])
        await _assert_gap_free(store, "r", 2)


async def test_a_call_unanswered_past_call_timeout_is_retried_on_a_new_connection(
    schema: str, proxy: _Proxy
) -> None:
    # No error, no close: the path to the server just goes silent. Without the
    # watchdog the append would wait forever on a connection nothing will answer.
    url = _url(schema, retry_for=30, call_timeout=0.5, min_size=1)
    async with PostgresStore(_with(url, netloc=f"postgres@127.0.0.1:{proxy.local_port}")) as store:
        await _create(store, "r")
        proxy.deaf = True

        async def heal() -> None:
            await anyio.sleep(0.2)  # the append is on the wire by now, and lost
            proxy.deaf = False

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            await store.append("r", 1, [_step("r", 2)])
        assert 0.5 <= time.monotonic() - started < 5
        await _assert_gap_free(store, "r", 2)


async def test_cut_connections_mid_load_through_a_proxy(schema: str, proxy: _Proxy) -> None:
    url = _with(_url(schema, retry_for=30), netloc=f"postgres@127.0.0.1:{proxy.local_port}")

    async def outage() -> None:
        proxy.cut()
        await anyio.sleep(0.5)
        proxy.up = True

    async with PostgresStore(url) as store:
        load = _Load(store, runs=30)
        await load.run(outage)
        await load.check()


# -- lost replies: the commit happened, the answer did not arrive --------------------------------


class _LoseReply:
    """A pool whose first statement matching ``marker`` runs, commits, and then 'drops'."""

    def __init__(
        self,
        pool: Any,
        marker: str,
        *,
        before: bool = False,
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._marker = marker
        self._before = before  # drop before running it instead: nothing is committed
        self._meanwhile = meanwhile  # another writer, between the drop and the retry
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._pool, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return real

        async def call(sql: str, *args: Any) -> Any:
            if self.dropped or self._marker not in sql:
                return await real(sql, *args)
            self.dropped += 1
            if not self._before:
                await real(sql, *args)
            if self._meanwhile is not None:
                await self._meanwhile()
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed (test)")

        return call


async def test_lost_reply_to_a_committed_append_is_success(store: PostgresStore) -> None:
    await _create(store, "r")
    lossy = _LoseReply(store._pool, "WITH bump AS")
    store._pool = lossy  # type: ignore[assignment]
    await store.append("r", 1, [_step("r", 2, x=1)])
    assert lossy.dropped == 1
    await _assert_gap_free(store, "r", 2)


async def test_lost_reply_then_another_writer_is_still_a_conflict(store: PostgresStore) -> None:
    await _create(store, "r")
    real = store._pool
    assert real is not None

    async def other_writer() -> None:
        sql = store._sql.append
        other = '{"step":0,"task":0,"node":"n","update":{"by":"other"}}'
        # kinds, ts, data, fence, hashes (the chain's), then the anchor's head, time, actor
        args = ("r", 1, None, None, ["step_finished"], [1.0], [other], None, [None], None, 0.0, "")
        await real.fetchrow(sql, *args)

    lossy = _LoseReply(real, "WITH bump AS", before=True, meanwhile=other_writer)
    store._pool = lossy  # type: ignore[assignment]
    with pytest.raises(ConflictError):
        await store.append("r", 1, [_step("r", 2, by="me")])
    assert lossy.dropped == 1
    events = await _assert_gap_free(store, "r", 2)
    assert _update(events[1]) == {"by": "other"}


async def test_lost_reply_to_a_group_commit_is_success(store: PostgresStore) -> None:
    for rid in ("a", "b", "c"):
        await _create(store, rid)
    lossy = _LoseReply(store._pool, "WITH req AS")
    store._pool = lossy  # type: ignore[assignment]
    async with anyio.create_task_group() as tg:
        for rid in ("a", "b", "c"):
            tg.start_soon(
                lambda r: store.append(r, 1, [_step(r, 2)], durability=Durability.BATCH), rid
            )
    assert lossy.dropped == 1
    for rid in ("a", "b", "c"):
        await _assert_gap_free(store, rid, 2)


async def test_lost_reply_to_a_created_run_reports_created(store: PostgresStore) -> None:
    lossy = _LoseReply(store._pool, "WITH new AS")
    store._pool = lossy  # type: ignore[assignment]
    result = await store.create_run(_run("r"), [_step("r", 1)], Durability.SYNC)
    assert lossy.dropped == 1 and result.created
    again = await store.create_run(_run("r"), [_step("r", 1)], Durability.SYNC)
    assert not again.created


# -- group commit and 'off' ----------------------------------------------------------------------


async def test_group_commit_isolates_a_conflicting_run(schema: str) -> None:
    async with PostgresStore(_url(schema, batch_window=0.05)) as store:
        ids = [f"r{i}" for i in range(20)]
        for rid in ids:
            await _create(store, rid)
        outcome: dict[str, BaseException | None] = {}

        async def append(rid: str) -> None:
            expected = 5 if rid == "r7" else 1  # r7 is stale
            try:
                event = _step(rid, expected + 1)
                await store.append(rid, expected, [event], durability=Durability.BATCH)
                outcome[rid] = None
            except ConflictError as exc:
                outcome[rid] = exc

        async with anyio.create_task_group() as tg:
            for rid in ids:
                tg.start_soon(append, rid)
        failed = {rid for rid, exc in outcome.items() if exc is not None}
        assert failed == {"r7"}
        for rid in ids:
            await _assert_gap_free(store, rid, 1 if rid == "r7" else 2)
        with pytest.raises(RunNotFoundError):
            await store.append("nope", 0, [_step("nope", 1)], durability=Durability.BATCH)


async def test_off_appends_are_read_back_and_fail_later(store: PostgresStore) -> None:
    await _create(store, "r")
    for n in range(1, 6):  # chained 'off' appends go out in order
        await store.append("r", n, [_step("r", n + 1)], durability=Durability.OFF)
    await _assert_gap_free(store, "r", 6)  # reads wait for this run's queued writes
    await store.append("r", 2, [_step("r", 3)], durability=Durability.OFF)  # stale: no error yet
    with pytest.raises(ConflictError):
        await store.flush()
    await store.flush()  # reported once
    await store.append("r", 3, [_step("r", 4)], durability=Durability.OFF)
    await store.get_run("r")  # waits for the run's queued write, which fails
    with pytest.raises(ConflictError):  # surfaces on the run's next append
        await store.append("r", 6, [_step("r", 7)])
    await store.append("r", 6, [_step("r", 7)])


async def test_misnumbered_events_are_refused(store: PostgresStore) -> None:
    await _create(store, "r")
    for bad in ([_step("r", 3)], [_step("other", 2)], [_step("r", 2), _step("r", 2)]):
        with pytest.raises(StoreError, match="must be numbered 2, 3"):
            await store.append("r", 1, bad)
    await _assert_gap_free(store, "r", 1)


async def test_sync_append_waits_for_queued_writes_of_its_run(store: PostgresStore) -> None:
    await _create(store, "r")
    await store.append("r", 1, [_step("r", 2)], durability=Durability.OFF)
    await store.append("r", 2, [_step("r", 3)], durability=Durability.SYNC)
    await _assert_gap_free(store, "r", 3)


async def test_open_and_close_from_any_task_and_inside_a_shield(schema: str) -> None:
    store = PostgresStore(_url(schema))
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.open)  # opened by a task that is gone by the time we close
    await _create(store, "r")
    await store.append("r", 1, [_step("r", 2)], durability=Durability.OFF)
    with anyio.CancelScope(shield=True):  # the usual cleanup idiom
        await store.aclose()  # also writes the pending 'off' append
    async with PostgresStore(_url(schema)) as again:
        await _assert_gap_free(again, "r", 2)


# -- NOTIFY wake-ups -----------------------------------------------------------------------------


async def test_status_changes_notify_mainspring_runs(store: PostgresStore, schema: str) -> None:
    got: list[dict[str, Any]] = []
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.add_listener("mainspring_runs", lambda *a: got.append(orjson.loads(a[3])))
        await _create(store, "r")
        await store.append("r", 1, [_step("r", 2)])  # no status: no notification
        await store.append("r", 2, [_step("r", 3)], status=RunStatus.RUNNING)  # unchanged: none
        await store.append("r", 3, [], status=RunStatus.INTERRUPTED)
        await store.append("r", 3, [], status=RunStatus.RUNNING, durability=Durability.BATCH)
        await store.append("r", 3, [], status=RunStatus.RUNNING, durability=Durability.BATCH)
        await store.append("r", 3, [], status=RunStatus.FINISHED, durability=Durability.OFF)
        await store.flush()
        with anyio.fail_after(5):
            while len([g for g in got if g["schema"] == schema]) < 4:
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)  # and nothing more arrives
    finally:
        await conn.close()
    mine = [(g["run_id"], g["status"]) for g in got if g["schema"] == schema]
    assert mine == [("r", "running"), ("r", "interrupted"), ("r", "running"), ("r", "finished")]


# -- leases --------------------------------------------------------------------------------------


async def test_lease_expiry_and_dead_local_owner(store: PostgresStore) -> None:
    await _create(store, "r")
    assert await store.claim("r", "w1", 0.3) == 1
    assert await store.claim("r", "w2", 10) is None
    await anyio.sleep(0.4)  # expiry is judged by the server's clock
    assert await store.claim("r", "w2", 10) == 2
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_owner = f"{socket.gethostname()}:{int(dead.stdout)}:tok"
    await store.release("r", "w2")
    assert await store.claim("r", dead_owner, 3600) == 3
    assert [r.run_id for r in await store.orphaned_runs("w3")] == ["r"]
    assert await store.claim("r", "w3", 10) == 4  # the dead process's lease is taken over
    with pytest.raises(RunNotFoundError):
        await store.claim("missing", "w3", 10)


# -- connection errors: one line, saying what to fix ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (
            {"netloc": "postgres@127.0.0.1:1"},
            StoreUnavailableError,
            ["127.0.0.1:1", "host and port"],
        ),
        ({"path": "/ms_no_such_db"}, StoreError, ["'ms_no_such_db' does not exist", "createdb"]),
        ({"netloc": "ms_no_such_role@127.0.0.1:5432"}, StoreError, ["'ms_no_such_role'", "role"]),
        ({"netloc": "postgres@no-such-host.invalid"}, StoreError, ["no-such-host.invalid", "host"]),
    ],
)
async def test_connection_errors_say_what_to_fix(
    pg_url: str, change: dict[str, str], error: type[StoreError], words: list[str]
) -> None:
    url = _with(PG_URL, **change) + "?retry_for=0.5"
    with anyio.fail_after(30), pytest.raises(error) as info:
        await PostgresStore(url).open()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
