"""The exact response cache: keys, and one conformance suite over memory, SQLite and Redis."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import pytest

from mainspring.models.cache import MemoryCache, ResponseCache, cache_key
from mainspring.models.cache_sqlite import SQLiteCache
from mainspring.models.messages import (
    ModelRequest,
    ModelResponse,
    OutputSpec,
    ToolCall,
    ToolSpec,
    Usage,
    assistant,
    system,
    user,
)
from tests.conftest import service_missing

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("MAINSPRING_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["memory", "sqlite", "redis"]


@functools.cache
def redis_unavailable(url: str = REDIS_URL) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}: {exc}"
    return None


@dataclass
class Backend:
    cache: ResponseCache
    corrupt: Callable[[str, bytes], object]  # writes raw bytes under a key (sync or async)


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Backend]:
    name: str = request.param
    if name == "memory":
        memory = MemoryCache(max_items=1000)

        def corrupt_memory(key: str, data: bytes) -> None:
            memory._entries[key] = (None, data)

        yield Backend(memory, corrupt_memory)
        await memory.aclose()
    elif name == "sqlite":
        lite = SQLiteCache(tmp_path / "cache.db")

        def corrupt_sqlite(key: str, data: bytes) -> None:
            lite._writer.execute(
                f"INSERT OR REPLACE INTO {lite.table} VALUES (?, ?, NULL)", (key, data)
            )

        yield Backend(lite, corrupt_sqlite)
        await lite.aclose()
    else:
        reason = redis_unavailable()
        if reason is not None:
            service_missing(reason)
        from mainspring.models.cache_redis import RedisCache

        prefix = f"mainspring:test:{uuid.uuid4().hex[:10]}:"
        red = RedisCache(REDIS_URL, prefix=prefix)

        async def corrupt_redis(key: str, data: bytes) -> None:
            await red._client.set(prefix + key, data)

        yield Backend(red, corrupt_redis)
        await red.clear()
        await red.aclose()


async def corrupt(backend: Backend, key: str, data: bytes) -> None:
    result = backend.corrupt(key, data)
    if result is not None:
        await result  # type: ignore[misc]


def request(**changes: object) -> ModelRequest:
    base = ModelRequest(
        model="gpt-4o-mini",
        messages=[system("be brief"), user("what is 2+2?")],
        tools=[
            ToolSpec("add", "adds", {"type": "object", "properties": {"a": {"type": "number"}}})
        ],
        temperature=0.0,
        params={"seed": 7, "top_p": 0.9},
    )
    return msgspec.structs.replace(base, **changes)


def response(text: str = "4", **changes: object) -> ModelResponse:
    base = ModelResponse(
        assistant(text, [ToolCall("c1", "add", {"a": 2, "b": [1, {"x": None}]})]),
        model="gpt-4o-mini",
        provider="openai",
        usage=Usage(10, 2, cached_tokens=3, cost=0.0001),
        output={"answer": 4},
        attempts=[{"model": "a", "error": "timeout"}],
    )
    return msgspec.structs.replace(base, **changes)


# -- keys ----------------------------------------------------------------------------------


def test_equal_requests_have_equal_keys_whatever_the_dict_order() -> None:
    a = request(params={"seed": 7, "top_p": 0.9, "extra": {"b": 1, "a": 2}})
    b = request(params={"extra": {"a": 2, "b": 1}, "top_p": 0.9, "seed": 7})
    assert cache_key(a) == cache_key(b)
    assert cache_key(request(temperature=1)) == cache_key(request(temperature=1.0))
    assert len(cache_key(a)) == 64 and int(cache_key(a), 16) >= 0


def test_keys_are_stable_across_processes() -> None:
    code = (
        "from tests.test_model_cache import request; from mainspring.models.cache import "
        "cache_key; print(cache_key(request()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(Path.cwd())}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == cache_key(request())


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"messages": [system("be brief"), user("what is 2+3?")]},
        {"messages": [system("be brief"), user("what is 2+2?"), user("")]},
        {"tools": []},
        {"tools": [ToolSpec("add", "adds two numbers", {"type": "object", "properties": {}})]},
        {
            "tools": [
                ToolSpec(
                    "add", "adds", {"type": "object", "properties": {"a": {"type": "integer"}}}
                )
            ]
        },
        {"tool_choice": "required"},
        {"output": OutputSpec("answer", {"type": "object"})},
        {"temperature": 0.5},
        {"max_tokens": 10},
        {"stop": ["\n"]},
        {"params": {"seed": 8, "top_p": 0.9}},
        {"params": {"seed": 7}},
    ],
)
def test_a_change_that_shapes_the_answer_changes_the_key(change: dict[str, object]) -> None:
    assert cache_key(request(**change)) != cache_key(request())


def test_scope_separates_tenants() -> None:
    assert cache_key(request(), scope="tenant-a") != cache_key(request(), scope="tenant-b")
    assert cache_key(request(), scope="tenant-a") == cache_key(request(), scope="tenant-a")


# -- conformance ---------------------------------------------------------------------------


async def test_hit_returns_an_equal_response_and_miss_returns_none(backend: Backend) -> None:
    cache = backend.cache
    key = cache_key(request())
    assert await cache.get(key) is None
    await cache.set(key, response())
    assert await cache.get(key) == response()
    assert await cache.get(cache_key(request(model="other"))) is None


async def test_entries_expire_after_their_ttl(backend: Backend) -> None:
    cache = backend.cache
    await cache.set("long", response("long"), ttl=60)
    await cache.set("forever", response("forever"))
    await cache.set("short", response("short"), ttl=0.25)  # read at once: a loaded machine
    assert await cache.get("short") == response("short")
    await anyio.sleep(0.35)
    assert await cache.get("short") is None
    assert await cache.get("long") == response("long")
    assert await cache.get("forever") == response("forever")


async def test_a_ttl_of_zero_stores_nothing(backend: Backend) -> None:
    await backend.cache.set("k", response())
    await backend.cache.set("k", response(), ttl=0)
    assert await backend.cache.get("k") is None


async def test_set_overwrites(backend: Backend) -> None:
    await backend.cache.set("k", response("first"))
    await backend.cache.set("k", response("second"))
    assert await backend.cache.get("k") == response("second")


async def test_delete_and_clear(backend: Backend) -> None:
    cache = backend.cache
    for i in range(5):
        await cache.set(f"k{i}", response(str(i)))
    await cache.delete("k1")
    await cache.delete("never-set")
    assert await cache.get("k1") is None
    assert await cache.get("k2") == response("2")
    await cache.clear()
    assert [await cache.get(f"k{i}") for i in range(5)] == [None] * 5


async def test_large_responses_round_trip(backend: Backend) -> None:
    big = response("x" * 3_000_000, output={"rows": [{"i": i, "s": "y" * 50} for i in range(5000)]})
    await backend.cache.set("big", big)
    assert await backend.cache.get("big") == big


async def test_concurrent_sets_all_land(backend: Backend) -> None:
    cache = backend.cache

    async def put(i: int) -> None:
        await cache.set(f"c{i}", response(f"answer {i}"))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(put, i)
    for i in range(50):
        assert await cache.get(f"c{i}") == response(f"answer {i}")


async def test_a_corrupt_entry_is_a_miss_and_is_overwritten(backend: Backend) -> None:
    for garbage in (b"", b"\x01not msgpack at all \xff\xfe", b"\x09future format", b"\x01\x92\x01"):
        await corrupt(backend, "bad", garbage)
        assert await backend.cache.get("bad") is None
    await backend.cache.set("bad", response())
    assert await backend.cache.get("bad") == response()


async def test_a_response_changed_after_get_does_not_change_the_cache(backend: Backend) -> None:
    await backend.cache.set("k", response())
    got = await backend.cache.get("k")
    assert got is not None
    got.attempts.append({"mutated": True})
    got.tool_calls[0].arguments["a"] = 99
    assert await backend.cache.get("k") == response()


def test_every_backend_implements_the_protocol(tmp_path: Path) -> None:
    from mainspring.models.cache_redis import RedisCache

    assert isinstance(MemoryCache(), ResponseCache)
    assert isinstance(SQLiteCache(tmp_path / "c.db"), ResponseCache)
    assert isinstance(RedisCache(REDIS_URL), ResponseCache)


# -- backend specifics ---------------------------------------------------------------------


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_items=3)
    for key in "abc":
        await cache.set(key, response(key))
    assert await cache.get("a") is not None  # a is now the most recent
    await cache.set("d", response("d"))
    assert await cache.get("b") is None
    assert [await cache.get(k) is not None for k in "acd"] == [True, True, True]
    assert len(cache) == 3


async def test_default_ttl_applies_when_set_gives_none(tmp_path: Path) -> None:
    for cache in (MemoryCache(default_ttl=0.05), SQLiteCache(tmp_path / "d.db", default_ttl=0.05)):
        await cache.set("k", response())
        await cache.set("kept", response(), ttl=60)
        await anyio.sleep(0.1)
        assert await cache.get("k") is None
        assert await cache.get("kept") is not None
        await cache.aclose()


async def test_sqlite_purges_expired_rows(tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "p.db", purge_interval=0.0)
    await cache.set("old", response(), ttl=0.01)
    await cache.set("kept", response())
    await anyio.sleep(0.03)
    await cache.set("new", response())  # purges on the way
    rows = [r[0] for r in cache._reader.execute(f"SELECT key FROM {cache.table}")]
    assert sorted(rows) == ["kept", "new"]
    await cache.set("old2", response(), ttl=0.01)
    await anyio.sleep(0.03)
    assert await cache.purge() == 1
    await cache.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await cache.get("kept")


_WRITER = """
import anyio, sys
from mainspring.models.cache_sqlite import SQLiteCache
from tests.test_model_cache import response
async def main():
    cache = SQLiteCache(sys.argv[1])
    for i in range(100):
        await cache.set(f"{sys.argv[2]}-{i}", response(f"{sys.argv[2]} {i}"))
        await cache.get(f"{sys.argv[2]}-{i}")
    await cache.aclose()
anyio.run(main)
"""


async def test_sqlite_is_shared_by_several_processes_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteCache(path)  # makes the file and table before the writers race
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"p{n}"], env=env)
        for n in range(4)
    ]
    with anyio.fail_after(60):
        while any(p.poll() is None for p in procs):
            await anyio.sleep(0.05)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    cache = SQLiteCache(path)
    for n in range(4):
        for i in (0, 57, 99):
            assert await cache.get(f"p{n}-{i}") == response(f"p{n} {i}")
    await cache.aclose()


async def test_redis_entries_carry_a_redis_expiry() -> None:
    reason = redis_unavailable()
    if reason is not None:
        service_missing(reason)
    from mainspring.models.cache_redis import RedisCache

    prefix = f"mainspring:test:{uuid.uuid4().hex[:10]}:"
    cache = RedisCache(REDIS_URL, prefix=prefix)
    other = RedisCache(REDIS_URL, prefix=prefix + "x[*]:")  # glob characters in a prefix
    await cache.set("k", response(), ttl=30)
    await other.set("k", response())
    ms = await cache._client.pttl(prefix + "k")
    assert 29_000 < ms <= 30_000
    await other.clear()
    assert await cache.get("k") is not None  # clear() touched only its own prefix
    await cache.clear()
    await cache.aclose()
    await other.aclose()


def test_redis_refuses_a_client_that_decodes_responses() -> None:
    import redis.asyncio

    from mainspring.models.cache_redis import RedisCache

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCache(redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True))
