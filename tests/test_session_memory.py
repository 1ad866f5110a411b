"""Session memory: one conformance suite, run against the in-process and the Redis backend.

Time passes through ``Backend.wait``: a fake clock for the local backend, real (short)
sleeps for Redis, whose expiry runs on the server's clock. The Redis backend runs on a
prefix of its own per test, removed afterwards; it is skipped when Redis is not
reachable, unless ``MAINSPRING_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.errors import MainspringError, StoreError, StoreUnavailableError, TenantError
from mainspring.memory.errors import VersionConflict
from mainspring.memory.session import (
    DEFAULT_TTL,
    LocalSessionMemory,
    SessionMemory,
    SessionSnapshot,
    TTLArg,
    Versioned,
    open_session_memory,
)
from tests.conftest import service_missing

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("MAINSPRING_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["local", "redis"]


@functools.cache
def redis_unavailable(url: str = REDIS_URL) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}: {exc}"
    return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    name: str
    memory: SessionMemory
    #: Another memory with other options: on Redis, on the same storage (the same prefix);
    #: local, a store of its own on the same clock.
    make: Callable[..., SessionMemory]
    #: Let ``seconds`` pass, as the backend's expiry sees time.
    wait: Callable[[float], Awaitable[None]]
    opened: list[SessionMemory] = field(default_factory=list)


@contextlib.asynccontextmanager
async def open_backend(name: str) -> AsyncIterator[Backend]:
    if name == "local":
        clock = FakeClock()

        def make_local(**options: Any) -> SessionMemory:
            return LocalSessionMemory(clock=clock, **options)

        async def advance(seconds: float) -> None:
            clock.now += seconds

        memory = make_local()
        yield Backend(name, memory, make_local, advance)
        await memory.aclose()
        return

    reason = redis_unavailable()
    if reason is not None:
        service_missing(reason)
    from mainspring.memory.session.redis import RedisSessionMemory

    prefix = f"ms:test:{uuid.uuid4().hex[:12]}:"
    opened: list[SessionMemory] = []

    def make_redis(**options: Any) -> SessionMemory:
        made = RedisSessionMemory(REDIS_URL, prefix=prefix, **options)
        opened.append(made)
        return made

    memory = make_redis()
    try:
        yield Backend(name, memory, make_redis, anyio.sleep, opened)
    finally:
        await drop_prefix(prefix)
        for made in opened:
            await made.aclose()


async def redis_keys(prefix: str) -> list[bytes]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        return [k async for k in client.scan_iter(match=pattern, count=1000)]
    finally:
        await client.aclose()


async def drop_prefix(prefix: str) -> None:
    import redis.asyncio as redis

    keys = await redis_keys(prefix)
    if keys:
        client = redis.Redis.from_url(REDIS_URL)
        await client.unlink(*keys)
        await client.aclose()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Backend]:
    async with open_backend(request.param) as opened:
        yield opened


# --- values ------------------------------------------------------------------------

JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**70,
    1.5,
    "",
    "héllo ✓ 🎉",
    [],
    {},
    {"nested": {"list": [1, "two", 3.0, None, {"deep": [False]}]}, "a:b": "%3A"},
]


async def test_values_round_trip_and_keys_list_what_is_there(backend: Backend) -> None:
    memory = backend.memory
    for i, value in enumerate(JSON_VALUES):
        await memory.set("t", f"k{i:02}", value)
    assert [await memory.get("t", f"k{i:02}") for i in range(len(JSON_VALUES))] == JSON_VALUES
    assert await memory.keys("t") == [f"k{i:02}" for i in range(len(JSON_VALUES))]
    await memory.set("t", "k00", "replaced")
    assert await memory.get("t", "k00") == "replaced"
    assert await memory.delete("t", "k00") is True
    assert await memory.delete("t", "k00") is False
    assert await memory.get("t", "k00") is None
    assert await memory.get("t", "missing") is None and await memory.get("other", "k01") is None
    assert "k00" not in await memory.keys("t")
    assert await memory.keys("nobody") == []


async def test_a_stored_value_cannot_be_changed_through_a_reference(backend: Backend) -> None:
    value: dict[str, Any] = {"items": [1]}
    await backend.memory.set("t", "k", value)
    value["items"].append(2)
    read = await backend.memory.get("t", "k")
    assert read == {"items": [1]}
    read["items"].append(3)
    assert await backend.memory.get("t", "k") == {"items": [1]}


NOT_JSON = [
    (datetime.datetime(2026, 1, 1), "datetime"),
    (b"bytes", "bytes"),
    ((1, 2), "tuple (use a list)"),
    ({1, 2}, "set"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    ({1: "int key"}, "the dict key 1 is a int"),
    ({"deep": [1, object()]}, "at ['deep'][1]: a object"),
    ("\ud800", "surrogates"),
]


@pytest.mark.parametrize(("value", "says"), NOT_JSON, ids=[s for _, s in NOT_JSON])
async def test_values_that_are_not_json_are_refused_naming_the_key(
    backend: Backend, value: Any, says: str
) -> None:
    memory = backend.memory
    with pytest.raises(TypeError, match=rf"'profile' is not JSON data.*{re.escape(says)}"):
        await memory.set("t", "profile", value)
    with pytest.raises(TypeError, match=r"shared value 'profile' is not JSON data"):
        await memory.compare_and_set("t", "profile", value, expected=0)
    with pytest.raises(TypeError, match=r"message 1 of the append is not JSON data"):
        await memory.append("t", "fine", value)
    assert await memory.snapshot("t") == SessionSnapshot("t")  # nothing was written


async def test_bad_names_and_arguments_get_clear_errors(backend: Backend) -> None:
    memory = backend.memory
    with pytest.raises(ValueError, match="thread must be a non-empty str"):
        await memory.get("", "k")
    with pytest.raises(TypeError, match="thread must be a str, not int"):
        await memory.set(7, "k", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be a non-empty str"):
        await memory.set("t", "", 1)
    with pytest.raises(TypeError, match="key must be a str"):
        await memory.read_shared("t", None)  # type: ignore[arg-type]
    with pytest.raises(TenantError, match="tenant must be a str"):
        await memory.messages("t", tenant=None)  # type: ignore[arg-type]
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl must be a positive, finite number"):
            await memory.set("t", "k", 1, ttl=ttl)
    with pytest.raises(TypeError, match="ttl must be seconds"):
        await memory.append("t", "m", ttl="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last must be a non-negative int"):
        await memory.messages("t", last=-1)
    for expected in (-1, True, 1.0):
        with pytest.raises(ValueError, match="expected must be the version read"):
            await memory.compare_and_set("t", "k", 1, expected=expected)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_for must be seconds >= 0"):
        await memory.threads(idle_for=-1)
    with pytest.raises(ValueError, match="attempts must be a positive int"):
        await memory.update("t", "k", lambda v: v, attempts=0)
    with pytest.raises(TypeError, match="restore takes a SessionSnapshot"):
        await memory.restore({"thread": "t"})  # type: ignore[arg-type]
    assert await memory.threads() == []  # none of it wrote anything


# --- tenants -------------------------------------------------------------------------

#: (tenant, thread, key) triples that a naive "tenant:thread:key" naming would mix up.
LOOKALIKES = [
    ("a:b", "c", "k"),
    ("a", "b:c", "k"),
    ("a", "b", "c:k"),
    ("a%3Ab", "c", "k"),
    ("a", "b%3Ac", "k"),
    ("", "a:b:c", "k"),
    ("a", "%threads", "k"),
    ("a", "b%253A", "k"),
]


async def test_tenants_and_threads_are_isolated_whatever_their_names(backend: Backend) -> None:
    memory = backend.memory
    for i, (tenant, thread, key) in enumerate(LOOKALIKES):
        await memory.set(thread, key, i, tenant=tenant)
        await memory.append(thread, f"m{i}", tenant=tenant)
        await memory.compare_and_set(thread, key, i, expected=0, tenant=tenant)
    for i, (tenant, thread, key) in enumerate(LOOKALIKES):
        assert await memory.get(thread, key, tenant=tenant) == i
        assert await memory.keys(thread, tenant=tenant) == [key]
        assert await memory.messages(thread, tenant=tenant) == [f"m{i}"]
        assert await memory.read_shared(thread, key, tenant=tenant) == Versioned(i, 1)
    listed = {
        (t.tenant, t.thread)
        for tenant in {"a", "a:b", ""}
        for t in await memory.threads(tenant=tenant)
    }
    assert listed == {
        (tenant, thread) for tenant, thread, _ in LOOKALIKES if tenant in {"a", "a:b", ""}
    }
    await memory.clear("b", tenant="a")
    assert await memory.get("b", "c:k", tenant="a") is None
    for i, (tenant, thread, key) in enumerate(LOOKALIKES):
        if (tenant, thread) != ("a", "b"):
            assert await memory.get(thread, key, tenant=tenant) == i


# --- messages ------------------------------------------------------------------------


async def test_messages_append_in_order_and_last_takes_the_most_recent(backend: Backend) -> None:
    memory = backend.memory
    assert await memory.messages("t") == []
    assert await memory.append("t") == 0 and await memory.threads() == []  # wrote nothing
    assert await memory.append("t", {"role": "user", "content": "hi"}) == 1
    assert await memory.append("t", "two", ["three"], 4) == 4
    assert await memory.append("t") == 4  # nothing to append
    assert await memory.messages("t") == [{"role": "user", "content": "hi"}, "two", ["three"], 4]
    assert await memory.messages("t", last=2) == [["three"], 4]
    assert await memory.messages("t", last=0) == []
    assert await memory.messages("t", last=10) == await memory.messages("t")
    many = list(range(2500))  # more than one slice of a Lua unpack
    assert await memory.append("big", *many) == 2500
    assert await memory.messages("big", last=3) == [2497, 2498, 2499]


# --- TTLs ----------------------------------------------------------------------------


async def test_entries_expire_after_their_ttl_and_a_write_can_choose_its_own(
    backend: Backend,
) -> None:
    memory = backend.make(ttl=10)
    short = backend.make(ttl=0.2)
    await memory.set("t", "default", 1)
    await memory.set("t", "forever", 2, ttl=None)
    await memory.set("t", "short", 3, ttl=0.2)
    await memory.append("t", "gone soon", ttl=0.2)
    await memory.compare_and_set("t", "shared", "gone soon", expected=0, ttl=0.2)
    await short.set("s", "k", 1)
    await short.append("s", "m")
    await short.compare_and_set("s", "k", 1, expected=0)
    await backend.wait(0.35)
    assert await memory.get("t", "short") is None
    assert await memory.messages("t") == []
    assert await memory.read_shared("t", "shared") is None
    assert await memory.keys("t") == ["default", "forever"]
    assert await memory.get("t", "forever") == 2
    assert await short.snapshot("s") == SessionSnapshot("s")
    assert [t.thread for t in await memory.threads()] == ["t"]  # "s" holds nothing now
    # An expired shared value is absent: the next writer starts again at version 1.
    assert await memory.compare_and_set("t", "shared", "new", expected=0) == Versioned("new", 1)


async def test_a_read_refreshes_the_ttl_it_was_written_with(backend: Backend) -> None:
    refreshing = backend.make(ttl=10, refresh_on_read=True)
    plain = backend.make(ttl=10, refresh_on_read=False)
    for memory, thread in ((refreshing, "r"), (plain, "p")):
        await memory.set(thread, "k", 1, ttl=0.4)
        await memory.append(thread, "m", ttl=0.4)
        await memory.compare_and_set(thread, "s", 1, expected=0, ttl=0.4)
    await backend.wait(0.2)

    async def read(memory: SessionMemory, thread: str) -> tuple[Any, ...]:
        return (
            await memory.get(thread, "k"),
            await memory.messages(thread),
            await memory.read_shared(thread, "s"),
        )

    assert await read(refreshing, "r") == await read(plain, "p") == (1, ["m"], Versioned(1, 1))
    await backend.wait(0.3)  # 0.5 s after the write, 0.3 s after the read
    assert await read(plain, "p") == (None, [], None)
    assert await read(refreshing, "r") == (1, ["m"], Versioned(1, 1))
    await backend.wait(0.6)  # refreshed by 0.4 s (the write's TTL), not by the default 10 s
    assert await read(refreshing, "r") == (None, [], None)


# --- shared values -------------------------------------------------------------------


async def test_compare_and_set_writes_only_over_the_version_it_read(backend: Backend) -> None:
    memory = backend.memory
    assert await memory.read_shared("t", "plan") is None
    first = await memory.compare_and_set("t", "plan", {"step": 1}, expected=0)
    assert first == Versioned({"step": 1}, 1)
    second = await memory.compare_and_set("t", "plan", {"step": 2}, expected=1)
    assert second == Versioned({"step": 2}, 2)
    with pytest.raises(VersionConflict, match="re-read it") as stale:
        await memory.compare_and_set("t", "plan", {"step": 9}, expected=1)
    assert isinstance(stale.value, MainspringError)
    assert stale.value.current == Versioned({"step": 2}, 2)
    with pytest.raises(VersionConflict, match="absent") as absent:
        await memory.compare_and_set("t", "other", 1, expected=3)
    assert absent.value.current is None
    assert await memory.read_shared("t", "plan") == Versioned({"step": 2}, 2)
    assert await memory.keys("t") == []  # shared values are not keys of set()


async def test_update_applies_a_function_over_the_current_value(backend: Backend) -> None:
    memory = backend.memory
    assert await memory.update("t", "n", lambda v: (v or 0) + 1) == Versioned(1, 1)
    assert await memory.update("t", "n", lambda v: v * 10) == Versioned(10, 2)

    def broken(value: Any) -> Any:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        await memory.update("t", "n", broken)
    with pytest.raises(TypeError, match="shared value 'n' is not JSON data"):
        await memory.update("t", "n", lambda v: {v})
    assert await memory.read_shared("t", "n") == Versioned(10, 2)


async def test_update_gives_up_after_its_attempts_with_the_last_conflict() -> None:
    class AlwaysRacing(LocalSessionMemory):
        """Another writer always gets in between the read and the write."""

        async def compare_and_set(
            self,
            thread: str,
            key: str,
            value: Any,
            *,
            expected: int,
            ttl: TTLArg = DEFAULT_TTL,
            tenant: str = "",
        ) -> Versioned:
            current = await self.read_shared(thread, key)
            await super().compare_and_set(
                thread,
                key,
                (current.value if current else 0) + 100,
                expected=current.version if current else 0,
            )
            return await super().compare_and_set(thread, key, value, expected=expected)

    memory = AlwaysRacing()
    seen: list[Any] = []

    def record(value: Any) -> int:
        seen.append(value)
        return 0

    with pytest.raises(VersionConflict) as gave_up:
        await memory.update("t", "n", record, attempts=3)
    assert seen == [None, 100, 200]  # each attempt sees what won the previous one
    assert gave_up.value.current == Versioned(300, 3)


# --- whole threads -------------------------------------------------------------------


async def fill(memory: SessionMemory, thread: str, tenant: str = "") -> None:
    await memory.set(thread, "profile", {"name": "Ada", "langs": ["en", "fr"]}, tenant=tenant)
    await memory.set(thread, "step", 3, tenant=tenant)
    await memory.append(thread, {"role": "user", "content": "hi"}, "ok", tenant=tenant)
    await memory.update(thread, "plan", lambda v: ["a"], tenant=tenant)
    await memory.update(thread, "plan", lambda v: [*v, "b"], tenant=tenant)


async def test_clear_forgets_everything_of_one_thread(backend: Backend) -> None:
    memory = backend.memory
    await fill(memory, "t")
    await fill(memory, "kept")
    await memory.clear("t")
    assert await memory.snapshot("t") == SessionSnapshot("t")
    assert await memory.keys("t") == [] and await memory.messages("t") == []
    assert [t.thread for t in await memory.threads()] == ["kept"]
    assert await memory.compare_and_set("t", "plan", 1, expected=0) == Versioned(1, 1)
    assert (await memory.snapshot("kept")).values["step"] == 3
    await memory.clear("never-written")


async def test_snapshot_and_restore_round_trip_through_json(backend: Backend) -> None:
    memory = backend.memory
    before = time.time()
    await fill(memory, "t", tenant="acme")
    snap = await memory.snapshot("t", tenant="acme")
    assert snap.values == {"profile": {"name": "Ada", "langs": ["en", "fr"]}, "step": 3}
    assert snap.messages == [{"role": "user", "content": "hi"}, "ok"]
    assert snap.shared == {"plan": Versioned(["a", "b"], 2)}
    assert before - 5 <= snap.last_active <= time.time() + 5

    stored = msgspec.json.decode(msgspec.json.encode(snap), type=SessionSnapshot)  # archived
    await memory.clear("t", tenant="acme")
    await backend.wait(0.01)
    await memory.restore(stored)
    again = await memory.snapshot("t", tenant="acme")
    assert msgspec.structs.replace(again, last_active=0.0) == msgspec.structs.replace(
        snap, last_active=0.0
    )
    assert again.last_active >= snap.last_active  # a restore is a write
    assert await memory.update("t", "plan", lambda v: [*v, "c"], tenant="acme") == Versioned(
        ["a", "b", "c"], 3
    )

    if backend.name == "redis":  # another client sees the restore
        assert (await backend.make().snapshot("t", tenant="acme")).values == snap.values
    assert await memory.snapshot("t") == SessionSnapshot("t")  # another tenant's thread


async def test_a_bad_snapshot_is_refused_before_anything_changes(backend: Backend) -> None:
    memory = backend.memory
    await fill(memory, "t")
    kept = await memory.snapshot("t")
    bad = SessionSnapshot("t", values={"ok": 1, "when": datetime.date(2026, 1, 1)})
    with pytest.raises(TypeError, match="snapshot value 'when' is not JSON data"):
        await memory.restore(bad)
    with pytest.raises(ValueError, match="version >= 1"):
        await memory.restore(SessionSnapshot("t", shared={"s": Versioned(1, 0)}))
    assert await memory.snapshot("t") == kept
    await memory.restore(SessionSnapshot("t"))  # an empty snapshot adds nothing
    assert await memory.snapshot("t") == kept
    await memory.restore(SessionSnapshot("empty"))  # and makes no thread
    assert [t.thread for t in await memory.threads()] == ["t"]


async def test_restore_merges_into_a_reused_thread_and_loses_nothing(backend: Backend) -> None:
    memory = backend.memory
    await fill(memory, "t")
    await memory.compare_and_set("t", "archived only", "old", expected=0)
    archived = await memory.snapshot("t")
    await memory.clear("t")
    # The thread is reused before the promotion.
    await memory.set("t", "step", 9)
    await memory.set("t", "new", True)
    await memory.append("t", "new message")
    await memory.compare_and_set("t", "plan", ["x"], expected=0)
    await memory.restore(archived)
    merged = await memory.snapshot("t")
    assert merged.values == {"new": True, "profile": archived.values["profile"], "step": 9}
    assert merged.messages == [{"role": "user", "content": "hi"}, "ok", "new message"]
    assert merged.shared == {"archived only": Versioned("old", 1), "plan": Versioned(["x"], 1)}
    assert merged.last_active > archived.last_active
    # Shared versions go on from the current one, for every writer.
    assert await memory.update("t", "plan", lambda v: [*v, "y"]) == Versioned(["x", "y"], 2)
    assert await memory.append("t", "after") == 4


async def test_clear_if_unchanged_clears_only_what_was_not_written_since(
    backend: Backend,
) -> None:
    memory = backend.memory
    await fill(memory, "t")
    seen = await memory.snapshot("t")
    assert await memory.clear_if_unchanged("t", seen.last_active) is True
    assert await memory.snapshot("t") == SessionSnapshot("t") and await memory.threads() == []
    assert await memory.clear_if_unchanged("t", seen.last_active) is False  # nothing there

    await memory.set("t", "k", 1)
    seen = await memory.snapshot("t")
    for write in (
        memory.set("t", "k", 2),  # on a frozen clock too (local): every write counts
        memory.append("t", "m"),
        memory.compare_and_set("t", "s", 1, expected=0),
        memory.delete("t", "k"),
    ):
        await write
        assert await memory.clear_if_unchanged("t", seen.last_active) is False
        seen = await memory.snapshot("t")
    assert seen.messages == ["m"] and seen.shared == {"s": Versioned(1, 1)}
    assert [t.last_active for t in await memory.threads()] == [seen.last_active]
    assert await memory.clear_if_unchanged("t", seen.last_active, tenant="other") is False
    assert await memory.clear_if_unchanged("t", seen.last_active) is True
    with pytest.raises(TypeError, match="last_active"):
        await memory.clear_if_unchanged("t", "yesterday")  # type: ignore[arg-type]


async def test_threads_lists_what_holds_something_oldest_first_with_idle_for(
    backend: Backend,
) -> None:
    memory = backend.memory
    start = time.time()
    await memory.set("old", "k", 1)
    await memory.append("old-messages", "m", tenant="acme")
    await backend.wait(0.3)
    await memory.compare_and_set("new", "k", 1, expected=0)
    await memory.set("emptied", "k", 1)
    await memory.delete("emptied", "k")
    listed = await memory.threads()
    assert [t.thread for t in listed] == ["old", "new"]
    assert all(t.tenant == "" and start - 5 <= t.last_active <= time.time() + 5 for t in listed)
    assert listed[1].last_active - listed[0].last_active >= 0.25
    assert [t.thread for t in await memory.threads(idle_for=0.2)] == ["old"]
    assert [t.thread for t in await memory.threads(idle_for=30)] == []
    assert [t.thread for t in await memory.threads(tenant="acme")] == ["old-messages"]
    await memory.get("old", "k")  # a read is not activity
    assert [t.thread for t in await memory.threads(idle_for=0.2)] == ["old"]
    await backend.wait(0.01)
    await memory.set("old", "k", 2)
    assert [t.thread for t in await memory.threads()] == ["new", "old"]


# --- concurrent writers (property) ---------------------------------------------------


async def race(name: str, writers: int, rounds: int, mode: str) -> None:
    """``writers`` tasks, each making ``rounds`` writes to one shared value, half of them
    through a second memory on the same storage (on Redis: another client)."""
    async with open_backend(name) as backend:
        memories = [backend.memory, backend.memory if name == "local" else backend.make()]
        successes = conflicts = 0

        async def writer(w: int) -> None:
            nonlocal successes, conflicts
            memory = memories[w % 2]
            for r in range(rounds):
                if mode == "update":
                    await memory.update("t", "count", lambda v: (v or 0) + 1)
                    successes += 1
                    continue
                while True:  # a hand-written CAS loop, with a yield between read and write
                    current = await memory.read_shared("t", "ids")
                    await anyio.sleep(0)
                    ids = [] if current is None else current.value
                    try:
                        await memory.compare_and_set(
                            "t",
                            "ids",
                            [*ids, f"{w}.{r}"],
                            expected=current.version if current else 0,
                        )
                    except VersionConflict:
                        conflicts += 1
                        continue
                    successes += 1
                    break

        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)

        assert successes == writers * rounds
        if mode == "update":
            final = await memories[1].read_shared("t", "count")
            assert final == Versioned(successes, successes)
        else:
            final = await memories[1].read_shared("t", "ids")
            assert final is not None and final.version == successes
            expected = {f"{w}.{r}" for w in range(writers) for r in range(rounds)}
            assert len(final.value) == len(expected) and set(final.value) == expected
            if name == "local":
                assert conflicts > 0  # the writers did race


@pytest.mark.parametrize("name", BACKENDS)
def test_concurrent_writers_never_lose_an_update(name: str) -> None:
    if name == "redis" and (reason := redis_unavailable()) is not None:
        service_missing(reason)

    @settings(
        max_examples=10 if name == "redis" else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        writers=st.integers(20, 50),
        rounds=st.integers(1, 2),
        mode=st.sampled_from(["update", "cas"]),
    )
    def check(writers: int, rounds: int, mode: str) -> None:
        anyio.run(race, name, writers, rounds, mode)

    check()


@pytest.mark.parametrize("name", BACKENDS)
def test_update_gets_fifty_writers_through_twenty_times_each(name: str) -> None:
    """The reviewer's case: on Redis, 31 of these 1000 calls gave up after 100 attempts."""
    if name == "redis" and (reason := redis_unavailable()) is not None:
        service_missing(reason)
    anyio.run(race, name, 50, 20, "update")


async def test_a_closed_memory_says_so_instead_of_answering(backend: Backend) -> None:
    memory = backend.make()
    await memory.set("t", "k", 1)
    await memory.aclose()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: memory.get("t", "k"),
        lambda: memory.set("t", "k", 2),
        lambda: memory.append("t", "m"),
        lambda: memory.messages("t"),
        lambda: memory.read_shared("t", "s"),
        lambda: memory.compare_and_set("t", "s", 1, expected=0),
        lambda: memory.update("t", "s", lambda v: 1),
        lambda: memory.keys("t"),
        lambda: memory.clear("t"),
        lambda: memory.clear_if_unchanged("t", 0.0),
        lambda: memory.threads(),
        lambda: memory.snapshot("t"),
        lambda: memory.restore(SessionSnapshot("t", values={"k": 3})),
    ]
    for call in calls:
        with pytest.raises(StoreError, match=r"SessionMemory.* is closed: open a new one"):
            await call()
    await memory.aclose()  # closing again is fine
    assert await backend.memory.get("t", "k") == (1 if backend.name == "redis" else None)


async def test_redis_that_cannot_be_reached_is_a_store_unavailable_error() -> None:
    import redis.exceptions

    from mainspring.memory.session.redis import RedisSessionMemory

    async with RedisSessionMemory("redis://:secret@127.0.0.1:1/3") as memory:
        for call in (memory.get("t", "k"), memory.set("t", "k", 1), memory.threads()):
            with pytest.raises(
                StoreUnavailableError, match=r"Redis at redis://127\.0\.0\.1:1/3"
            ) as e:
                await call
            assert "check that the server runs" in str(e.value)
            assert "secret" not in str(e.value)
            assert isinstance(e.value.__cause__, redis.exceptions.ConnectionError)


# --- backend-specific ----------------------------------------------------------------


async def test_local_sweep_drops_expired_threads_nobody_reads() -> None:
    clock = FakeClock()
    memory = LocalSessionMemory(ttl=1, clock=clock)
    for i in range(100):
        await memory.set(f"t{i}", "k", i)
    await memory.set("kept", "k", 1, ttl=None)
    clock.now += 2
    for _ in range(256 * 10):  # other traffic: the sweep runs every few hundred operations
        await memory.get("kept", "k")
    assert list(memory._tenants[""]) == ["kept"]


async def test_redis_keys_carry_expiry_and_clear_leaves_nothing_behind() -> None:
    async with open_backend("redis") as backend:
        memory = backend.memory
        prefix = memory.prefix  # type: ignore[attr-defined]
        await fill(memory, "t", tenant="acme")
        await memory.set("t", "forever", 1, ttl=None, tenant="acme")
        import redis.asyncio as redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            ttls = {k: await client.pttl(k) for k in await redis_keys(prefix)}
        finally:
            await client.aclose()
        forever = sorted(k.removeprefix(prefix.encode()) for k, ms in ttls.items() if ms == -1)
        # the entry that never expires, and what must outlive it: its index, its tenant's list
        assert forever == [b"acme:%threads", b"acme:t:i", b"acme:t:v:forever"], ttls
        assert len(ttls) == 7  # and 2 values, the messages, a shared value, with their TTL
        assert all(0 < ms <= 3_600_000 for ms in ttls.values() if ms != -1)
        await memory.clear("t", tenant="acme")
        assert await redis_keys(prefix) == []


def test_open_session_memory_picks_the_backend_by_url() -> None:
    assert isinstance(open_session_memory(None), LocalSessionMemory)
    local = open_session_memory("memory", ttl=None, refresh_on_read=False)
    assert isinstance(local, LocalSessionMemory) and local.ttl is None
    from mainspring.memory.session.redis import RedisSessionMemory

    remote = open_session_memory("redis://127.0.0.1:6379/0", prefix="x:")
    assert isinstance(remote, RedisSessionMemory) and remote.prefix == "x:"
    anyio.run(remote.aclose)
    with pytest.raises(ValueError, match=r"no session memory for 'postgresql'.*redis://"):
        open_session_memory("postgresql://localhost/db")
    with pytest.raises(ValueError, match="no session memory for 'nonsense'"):
        open_session_memory("nonsense")


def test_the_docs_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "memory-session.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S)
    assert block is not None, "docs/memory-session.md has a python example"
    exec(compile(block.group(1), "docs/memory-session.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "Versioned(value=2, version=2)" in out
    assert "conflict: re-read" in out


def test_redis_refuses_a_client_that_decodes_responses() -> None:
    import redis.asyncio as redis

    from mainspring.memory.session.redis import RedisSessionMemory

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisSessionMemory(client)
    anyio.run(client.aclose)
