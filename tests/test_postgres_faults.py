"""The PostgreSQL store under network faults: stalls, dead pools, nothing listening.

A stall is a path to the server that goes silent: no error, no close, as when a
router or NAT loses its state. The proxy of ``test_postgres_store`` makes one:
it silences the connections open at that moment and lets new ones through, or
swallows everything (``deaf``), or refuses. Settings are small (``call_timeout``
of half a second) so that each test takes about a second.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from mainspring.errors import StoreError, StoreUnavailableError
from mainspring.store import Durability, RunQuery, Snapshot
from mainspring.store._pg_pool import Connection
from mainspring.store.postgres import PostgresStore
from tests.conftest import PG_URL
from tests.test_postgres_store import _admin, _assert_gap_free, _create, _Proxy, _step, _with

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

CALL_TIMEOUT = 0.5


@pytest.fixture
async def proxy() -> AsyncIterator[_Proxy]:
    parts = urlsplit(PG_URL)
    p = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    async with anyio.create_task_group() as tg:
        await tg.start(p.serve)
        yield p
        tg.cancel_scope.cancel()


def _via(proxy: _Proxy, url: str, **params: object) -> str:
    """``url`` (a store URL on a fresh schema) through ``proxy``, with more options."""
    query = "".join(f"&{k}={v}" for k, v in params.items())
    return _with(url, netloc=f"postgres@127.0.0.1:{proxy.local_port}") + query


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.name.startswith("mainspring"))


# -- call_timeout and retry_for agree -----------------------------------------------------------


def test_defaults_leave_a_stalled_call_time_to_be_retried() -> None:
    s = PostgresStore(PG_URL)
    assert (s.call_timeout, s.retry_for) == (10.0, 30.0)
    assert PostgresStore(PG_URL, retry_for=3).call_timeout == 1.0  # a third of retry_for
    assert PostgresStore(f"{PG_URL}?retry_for=0").call_timeout == 10.0  # never retried anyway
    assert PostgresStore(PG_URL, retry_for=0, call_timeout=60).call_timeout == 60


@pytest.mark.parametrize(
    ("query", "call_timeout", "retry_for"),
    [("", 30.0, 30.0), ("?call_timeout=5&retry_for=3", None, None)],
)
def test_call_timeout_not_below_retry_for_is_refused(
    query: str, call_timeout: float | None, retry_for: float | None
) -> None:
    with pytest.raises(StoreError, match=r"call_timeout=.* below retry_for=") as info:
        PostgresStore(PG_URL + query, call_timeout=call_timeout, retry_for=retry_for)
    assert "\n" not in str(info.value)


async def test_a_stalled_call_is_retried_within_retry_for(
    postgres_url: str, proxy: _Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mainspring")
    url = _via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=3, min_size=1)
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.silence_open_links()
        started = time.monotonic()
        await store.append("r", 1, [_step("r", 2)])
        assert CALL_TIMEOUT <= time.monotonic() - started < CALL_TIMEOUT + 0.7
        await _assert_gap_free(store, "r", 2)
    assert "no answer within call_timeout=0.5 s); retrying" in _log_text(caplog)


async def test_a_stalled_call_with_no_retry_left_is_not_said_to_be_retried(
    postgres_url: str, proxy: _Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mainspring")
    url = _via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=0, min_size=1)
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.silence_open_links()
        with pytest.raises(StoreUnavailableError, match="no answer within call_timeout") as info:
            await store.append("r", 1, [_step("r", 2)])
        assert "\n" not in str(info.value)
    assert "no answer" in _log_text(caplog)
    assert "retry" not in _log_text(caplog)


# -- one stall costs one call_timeout, however many connections it killed -----------------------


async def test_a_stall_of_every_pooled_connection_costs_one_call_timeout(
    postgres_url: str, proxy: _Proxy
) -> None:
    # Six idle connections, all dead: handed out in turn, they would cost six call_timeouts.
    url = _via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=10, min_size=6)
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.silence_open_links()
        started = time.monotonic()
        with anyio.fail_after(10):
            await store.append("r", 1, [_step("r", 2)])
        assert time.monotonic() - started < CALL_TIMEOUT + 0.7
        await _assert_gap_free(store, "r", 2)


async def test_calls_stuck_on_a_dead_path_end_with_the_first_one(
    postgres_url: str, proxy: _Proxy
) -> None:
    timeout = 1.0
    url = _via(proxy, postgres_url, call_timeout=timeout, retry_for=10, min_size=4)
    async with PostgresStore(url) as store:
        await _create(store, "a")
        await _create(store, "b")
        proxy.silence_open_links()
        started = time.monotonic()
        done: dict[str, float] = {}

        async def append(run_id: str, after: float) -> None:
            await anyio.sleep(after)
            await store.append(run_id, 1, [_step(run_id, 2)])
            done[run_id] = time.monotonic() - started

        async with anyio.create_task_group() as tg:
            tg.start_soon(append, "a", 0)
            tg.start_soon(append, "b", 0.4)  # stuck too, on another connection of the pool
        # b is cut off with a, not a whole call_timeout after its own start (1.4 s).
        assert done["a"] < timeout + 0.25 and done["b"] < timeout + 0.25, done
        for rid in ("a", "b"):
            await _assert_gap_free(store, rid, 2)


# -- opening: nothing listening, nothing answering, no connection to spare ----------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # closed again: nothing listens there


async def test_open_fails_at_once_when_nothing_listens() -> None:
    port = _free_port()
    store = PostgresStore(_with(PG_URL, netloc=f"postgres@127.0.0.1:{port}"), retry_for=30)
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert time.monotonic() - started < 0.5
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "start the server" in message


async def test_open_fails_after_call_timeout_when_the_server_never_answers(
    postgres_url: str, proxy: _Proxy
) -> None:
    proxy.deaf = True  # connections are accepted, and nothing comes back
    store = PostgresStore(_via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=30))
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(StoreUnavailableError, match="no answer") as info:
        await store.open()
    assert time.monotonic() - started < CALL_TIMEOUT + 0.5
    assert "\n" not in str(info.value)


@pytest.fixture
async def limited_role(postgres_url: str) -> AsyncIterator[str]:
    """A role that may hold one connection at a time."""
    role = f"ms_t_{uuid.uuid4().hex[:8]}"
    await _admin(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    await _admin(f"GRANT CREATE ON DATABASE {urlsplit(PG_URL).path.lstrip('/')} TO {role}")
    try:
        yield role
    finally:
        await _admin(f"DROP OWNED BY {role}")
        await _admin(f"DROP ROLE {role}")


async def test_open_waits_for_a_server_with_no_connection_to_spare(
    postgres_url: str, limited_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server is there and answers "too many connections": that passes, so open() retries.
    caplog.set_level(logging.WARNING, "mainspring")
    url = _with(postgres_url, netloc=f"{limited_role}@{urlsplit(PG_URL).netloc.split('@')[-1]}")
    held = await asyncpg.connect(url.split("?")[0])
    try:
        store = PostgresStore(url, retry_for=3, min_size=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.open)
            await anyio.sleep(0.3)
            assert "too many connections" in _log_text(caplog)
            await held.close()
        await store.aclose()
    finally:
        await held.close()


# -- the same fault elsewhere: reads, leases, the batch writer, open and close -------------------


async def _off_then_flush(store: PostgresStore) -> None:
    await store.append("r", 1, [_step("r", 2)], durability=Durability.OFF)
    await store.flush()


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda s: s.read("r"), id="read"),
        pytest.param(lambda s: s.list_runs(RunQuery()), id="list_runs"),
        pytest.param(lambda s: s.claim("r", "w1", 30), id="claim"),
        pytest.param(lambda s: s.renew("w1", 30), id="renew"),
        pytest.param(lambda s: s.save_snapshot(Snapshot("r", 1, {"x": 1})), id="snapshot"),
        pytest.param(
            lambda s: s.append("r", 1, [_step("r", 2)], durability=Durability.BATCH), id="batch"
        ),
        pytest.param(_off_then_flush, id="off_then_flush"),
    ],
)
async def test_every_operation_rides_out_a_stall_in_one_call_timeout(
    postgres_url: str, proxy: _Proxy, operation: Callable[[PostgresStore], Awaitable[object]]
) -> None:
    url = _via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=10, min_size=4)
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.silence_open_links()
        started = time.monotonic()
        with anyio.fail_after(10):
            await operation(store)
        assert time.monotonic() - started < CALL_TIMEOUT + 0.7


async def test_a_stall_while_open_checks_the_schema_is_cut_off(
    postgres_url: str, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(_via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, min_size=1))
    connect = store._connect
    stalled = False

    async def connect_then_stall() -> Connection:
        nonlocal stalled
        conn = await connect()
        if not stalled:  # the first connection dies right after it was made
            stalled = True
            proxy.silence_open_links()
        return conn

    monkeypatch.setattr(store, "_connect", connect_then_stall)
    with anyio.fail_after(10):
        await store.open()
    try:
        await _create(store, "r")
    finally:
        await store.aclose()


async def test_close_on_a_dead_path_waits_at_most_call_timeout(
    postgres_url: str, proxy: _Proxy
) -> None:
    store = PostgresStore(_via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, min_size=6))
    await store.open()
    await _create(store, "r")
    proxy.silence_open_links()
    started = time.monotonic()
    with anyio.fail_after(10):
        await store.aclose()
    assert time.monotonic() - started < CALL_TIMEOUT + 0.5


async def test_a_path_that_stays_dead_fails_within_retry_for(
    postgres_url: str, proxy: _Proxy
) -> None:
    # New connections hang too: each reconnect must give up after call_timeout as well.
    retry_for = 2.0
    url = _via(proxy, postgres_url, call_timeout=CALL_TIMEOUT, retry_for=retry_for)
    async with PostgresStore(url) as store:
        await _create(store, "r")
        proxy.silence_open_links()
        proxy.deaf = True
        started = time.monotonic()
        with anyio.fail_after(20), pytest.raises(StoreUnavailableError, match="no answer"):
            await store.append("r", 1, [_step("r", 2)])
        assert time.monotonic() - started < retry_for + 2 * CALL_TIMEOUT + 0.5
        proxy.deaf = False
