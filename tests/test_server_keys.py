"""API key stores: one conformance suite run against every backend (memory, SQLite, PostgreSQL),
then what each backend owes the journal store it shares a file or schema with."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from mainspring.errors import NotAStoreError
from mainspring.server import create_app
from mainspring.server.keys import KeyStoreCore, Scope, key_store_from_url, parse_scopes
from mainspring.server.keys._core import split_key
from mainspring.store import store_from_url
from mainspring.store._doctor import diagnose
from tests.cli_graphs import support
from tests.conftest import postgres_schema_url

pytestmark = pytest.mark.anyio

READ_RUN = frozenset({Scope.READ, Scope.RUN})


class Clock:
    """A clock the test moves: the cache's TTL without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        async with postgres_schema_url() as found:
            yield found


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def opened(url: str, clock: Callable[[], float] | None = None) -> AsyncIterator[KeyStoreCore]:
    keys = key_store_from_url(url, clock=clock) if clock else key_store_from_url(url)
    await keys.open()
    try:
        yield keys
    finally:
        await keys.aclose()


@pytest.fixture
async def keys(url: str, clock: Clock) -> AsyncIterator[KeyStoreCore]:
    async with opened(url, clock) as store:
        yield store


# -- the conformance suite -------------------------------------------------------------------


async def test_a_new_key_verifies_as_its_tenant_and_scopes(keys: KeyStoreCore) -> None:
    info, key = await keys.create("acme", READ_RUN, name="ci")
    assert key.startswith(f"ms_{info.key_id}_") and split_key(key) is not None
    assert (info.tenant, info.scopes, info.name, info.revoked_at) == ("acme", READ_RUN, "ci", None)
    principal = await keys.verify(key)
    assert principal is not None
    assert (principal.key_id, principal.tenant, principal.scopes) == (info.key_id, "acme", READ_RUN)
    assert principal.allows(Scope.RUN) and not principal.allows(Scope.APPROVE)
    assert await keys.get(info.key_id) == info


async def test_admin_implies_every_scope_and_the_operator_tenant_is_kept(
    keys: KeyStoreCore,
) -> None:
    _, key = await keys.create("*", frozenset({Scope.ADMIN}))
    principal = await keys.verify(key)
    assert principal is not None and principal.tenant == "*"
    assert all(principal.allows(s) for s in Scope)
    _, default = await keys.create("", frozenset({Scope.READ}))  # the default tenant
    found = await keys.verify(default)
    assert found is not None and found.tenant == ""


async def test_wrong_unknown_and_malformed_keys_are_refused_alike(keys: KeyStoreCore) -> None:
    info, key = await keys.create("acme", READ_RUN)
    secret = key[len(f"ms_{info.key_id}_") :]
    wrong = f"ms_{info.key_id}_{'A' * len(secret)}"
    unknown = f"ms_{'0' * 16}_{secret}"
    for bad in (wrong, unknown, "", "ms_", key + "x", key[:-1], key.upper(), "Bearer " + key):
        assert await keys.verify(bad) is None, bad
    assert await keys.verify(key) is not None


async def test_revoked_keys_stop_at_once_in_the_store_that_revoked_them(
    keys: KeyStoreCore,
) -> None:
    info, key = await keys.create("acme", READ_RUN)
    assert await keys.verify(key) is not None  # cached now
    assert await keys.revoke(info.key_id) is True
    assert await keys.verify(key) is None
    assert await keys.revoke(info.key_id) is False  # already revoked
    assert await keys.revoke("0" * 16) is False  # unknown
    listed = await keys.list()
    assert [k.key_id for k in listed] == [info.key_id]
    assert listed[0].revoked_at is not None


async def test_list_is_oldest_first_and_filters_by_tenant(keys: KeyStoreCore) -> None:
    a1, _ = await keys.create("acme", READ_RUN, name="one")
    g1, _ = await keys.create("globex", frozenset({Scope.APPROVE}))
    a2, _ = await keys.create("acme", frozenset({Scope.ADMIN}), name="two")
    assert [k.key_id for k in await keys.list()] == [a1.key_id, g1.key_id, a2.key_id]
    assert [k.key_id for k in await keys.list("acme")] == [a1.key_id, a2.key_id]
    assert [k.scopes for k in await keys.list("globex")] == [frozenset({Scope.APPROVE})]
    assert await keys.list("nobody") == []


async def test_invalid_scopes_and_tenants_say_what_to_give(keys: KeyStoreCore) -> None:
    with pytest.raises(ValueError, match="read, run, approve, admin"):
        parse_scopes("read,write")
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes(" , ")
    assert parse_scopes("Read, run,") == READ_RUN
    with pytest.raises(ValueError, match="at least one scope"):
        await keys.create("acme", frozenset())
    with pytest.raises(ValueError, match="printable"):
        await keys.create("ac\nme", READ_RUN)


async def test_a_revocation_elsewhere_takes_effect_within_the_cache_ttl(
    url: str, keys: KeyStoreCore, clock: Clock
) -> None:
    if url.startswith("memory"):
        pytest.skip("a memory store is not shared between store objects")
    info, key = await keys.create("acme", READ_RUN)
    assert await keys.verify(key) is not None
    async with opened(url) as other:  # another process: `mainspring keys revoke`
        assert await other.revoke(info.key_id)
    assert await keys.verify(key) is not None  # trusted from the cache, within the TTL
    clock.now += keys.cache_ttl + 0.001
    assert await keys.verify(key) is None


async def test_without_a_cache_a_revocation_elsewhere_is_immediate(url: str) -> None:
    if url.startswith("memory"):
        pytest.skip("a memory store is not shared between store objects")
    async with opened(url) as maker:
        info, key = await maker.create("acme", READ_RUN)
    store = key_store_from_url(url, cache_ttl=0)
    await store.open()
    try:
        assert await store.verify(key) is not None
        async with opened(url) as other:
            await other.revoke(info.key_id)
        assert await store.verify(key) is None
    finally:
        await store.aclose()


async def test_keys_survive_reopening(url: str) -> None:
    if url.startswith("memory"):
        pytest.skip("memory keys live as long as their store object")
    async with opened(url) as first:
        info, key = await first.create("acme", READ_RUN, name="kept")
    async with opened(url) as second:
        principal = await second.verify(key)
        assert principal is not None and principal.key_id == info.key_id
        assert [k.name for k in await second.list()] == ["kept"]


# -- what is stored: hashes, never secrets ---------------------------------------------------


async def stored_rows(url: str) -> list[tuple[object, ...]]:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///") :])) as db:
            return db.execute("SELECT * FROM api_keys").fetchall()
    base, _, schema = url.rpartition("schema=")
    conn = await asyncpg.connect(base.rstrip("?&"))
    try:
        return [tuple(r) for r in await conn.fetch(f'SELECT * FROM "{schema}".api_keys')]
    finally:
        await conn.close()


async def test_only_the_hash_of_the_secret_is_stored(url: str, keys: KeyStoreCore) -> None:
    if url.startswith("memory"):
        pytest.skip("nothing written outside the process")
    _, key = await keys.create("acme", READ_RUN)
    secret = key.split("_", 2)[2]
    rows = await stored_rows(url)
    assert len(rows) == 1
    text = repr(rows[0])
    assert secret not in text and key not in text
    stored = [bytes(v) for v in rows[0] if isinstance(v, bytes | memoryview)]
    assert stored == [hashlib.sha256(secret.encode()).digest()]


# -- living beside the journal store ----------------------------------------------------------


async def test_sqlite_keys_first_make_a_whole_store_the_journal_opens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    async with opened(url) as keys:
        _, key = await keys.create("acme", READ_RUN)
    store = store_from_url(url)
    await store.open()  # its identity and integrity checks pass with the keys table in
    await store.aclose()
    report = await diagnose(url)
    assert report.healthy, report.problems
    async with opened(url) as keys:
        assert await keys.verify(key) is not None


async def test_sqlite_keys_join_an_open_journal_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = store_from_url(url)
    await store.open()
    try:
        async with opened(url) as keys:
            _, key = await keys.create("acme", READ_RUN)
            assert await keys.verify(key) is not None
    finally:
        await store.aclose()
    await store_from_url(url).open()  # reopens cleanly


async def test_sqlite_keys_refuse_a_foreign_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE mine (x)")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(NotAStoreError, match="not a Mainspring store"):
        async with opened(f"sqlite:///{path}"):
            pass
    assert path.read_bytes() == before


async def test_postgres_keys_first_make_a_whole_store_the_journal_opens() -> None:
    async with postgres_schema_url() as url:
        async with opened(url) as keys:
            _, key = await keys.create("acme", READ_RUN)
        store = store_from_url(url)
        await store.open()
        await store.aclose()
        report = await diagnose(url)
        assert report.healthy, report.problems
        async with opened(url) as keys:
            assert await keys.verify(key) is not None


async def test_unknown_urls_name_the_ones_to_use() -> None:
    with pytest.raises(Exception, match="sqlite:///"):
        key_store_from_url("redis://localhost")
    assert type(key_store_from_url("keys.db")).__name__ == "SQLiteKeyStore"


async def test_a_server_keeps_its_keys_in_its_own_store(url: str) -> None:
    """``create_app`` on a store URL with ``key_store_from_url`` of the same URL: both open
    the one file or schema, and a key made before the server started lets a client in."""
    if url.startswith("memory"):
        pytest.skip("a memory store is not shared between store objects")
    async with opened(url) as maker:
        _, key = await maker.create("acme", READ_RUN)
    keys = key_store_from_url(url)
    app = create_app(url, graphs=[support], keys=keys)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            auth = {"Authorization": f"Bearer {key}"}
            body = {"graph": "support", "input": {"text": "hello"}, "wait": True}
            started = await client.post("/v1/runs", json=body, headers=auth)
            assert started.status_code == 201, started.text
            assert started.json()["tenant"] == "acme"
            me = await client.get("/v1/me", headers=auth)
            assert me.json()["tenant"] == "acme"
