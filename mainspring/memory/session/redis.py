"""Session memory on Redis, shared by every process that reaches the server.

Each operation is one round trip: a plain command where one suffices (a read without
refresh), else a Lua script (atomic), run by its SHA. Key layout and scripts:
:mod:`.redis_scripts`. Tenant, thread and key names are escaped in key names (``%`` and
``:``), so no choice of names can reach another tenant's or thread's keys.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

import redis.asyncio as redis
from redis import exceptions as redis_errors
from redis.exceptions import NoScriptError

import mainspring.memory.session.redis_scripts as lua

from ...errors import StoreError, StoreUnavailableError
from ..errors import VersionConflict
from .protocol import (
    DEFAULT_TTL,
    SessionMemory,
    SessionSnapshot,
    ThreadActivity,
    TTLArg,
    Versioned,
)
from .values import (
    check_idle_for,
    check_last,
    check_names,
    check_time,
    check_ttl,
    check_version,
    decode,
    encode,
    encode_snapshot,
    resolve_ttl,
)


@functools.lru_cache(maxsize=16384)
def esc(name: str) -> str:
    """``name`` without ``:`` (the separator of key names), reversibly."""
    return name.replace("%", "%25").replace(":", "%3A")


def _ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, round(ttl * 1000))


def _shared(raw: bytes) -> Versioned:
    version, _, data = raw.partition(b"|")
    return Versioned(decode(data), int(version))


class RedisSessionMemory(SessionMemory):
    """Session memory in Redis at ``url`` (``redis://host:port/db``), or on a client you
    pass (then you close it); every key starts with ``prefix``.

    ``ttl``: the default TTL of every write in seconds (None: never expire);
    ``refresh_on_read``: a read extends what it read by the TTL it was written with.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        ttl: float | None = 3600,
        refresh_on_read: bool = True,
        prefix: str = "ms:",
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {prefix!r}")
        self._owned = isinstance(url_or_client, str)
        self._client: redis.Redis = (
            redis.Redis.from_url(url_or_client) if isinstance(url_or_client, str) else url_or_client
        )
        if self._client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisSessionMemory stores bytes: give it a client made with decode_responses=False"
            )
        self.ttl = check_ttl(ttl)
        self.refresh_on_read = bool(refresh_on_read)
        self.prefix = prefix
        self._closed = False

    # --- key-value -------------------------------------------------------------------

    async def get(self, thread: str, key: str, *, tenant: str = "") -> Any | None:
        check_names(thread, tenant, key)
        base = self._base(tenant, thread)
        member = "v:" + esc(key)
        if self.refresh_on_read:
            raw = await self._run(
                lua.GET, [base + member, base + "i", self._activity(tenant)], [member]
            )
        else:
            raw = await self._command(self._client.get, base + member)
        return None if raw is None else decode(raw)

    async def set(
        self, thread: str, key: str, value: Any, *, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> None:
        check_names(thread, tenant, key)
        ms = _ms(resolve_ttl(ttl, self.ttl))
        data = encode(value, "the value of key {!r}", key)[0]
        base = self._base(tenant, thread)
        member = "v:" + esc(key)
        await self._run(
            lua.SET,
            [base + member, base + "i", self._activity(tenant)],
            [member, ms, esc(thread), data],
        )

    async def delete(self, thread: str, key: str, *, tenant: str = "") -> bool:
        check_names(thread, tenant, key)
        base = self._base(tenant, thread)
        member = "v:" + esc(key)
        keys = [base + member, base + "i", self._activity(tenant)]
        return bool(await self._run(lua.DELETE, keys, [member, esc(thread)]))

    async def keys(self, thread: str, *, tenant: str = "") -> list[str]:
        check_names(thread, tenant)
        base = self._base(tenant, thread)
        names = await self._run(lua.KEYS, [base + "i"], [base])
        return sorted(unquote(n.decode()) for n in names)

    # --- messages --------------------------------------------------------------------

    async def append(
        self, thread: str, *messages: Any, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> int:
        check_names(thread, tenant)
        ms = _ms(resolve_ttl(ttl, self.ttl))
        encoded = [encode(m, "message {} of the append", i)[0] for i, m in enumerate(messages)]
        base = self._base(tenant, thread)
        if not encoded:
            return int(await self._command(self._client.llen, base + "m"))
        keys = [base + "m", base + "i", self._activity(tenant)]
        return int(await self._run(lua.APPEND, keys, ["m", ms, esc(thread), *encoded]))

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]:
        check_names(thread, tenant)
        last = check_last(last)
        if last == 0:
            return []
        base = self._base(tenant, thread)
        first = 0 if last is None else -last
        if self.refresh_on_read:
            keys = [base + "m", base + "i", self._activity(tenant)]
            items = await self._run(lua.MESSAGES, keys, ["m", first])
        else:
            items = await self._command(self._client.lrange, base + "m", first, -1)
        return [decode(d) for d in items]

    # --- shared, versioned -----------------------------------------------------------

    async def read_shared(self, thread: str, key: str, *, tenant: str = "") -> Versioned | None:
        check_names(thread, tenant, key)
        base = self._base(tenant, thread)
        member = "s:" + esc(key)
        if self.refresh_on_read:
            keys = [base + member, base + "i", self._activity(tenant)]
            raw = await self._run(lua.GET, keys, [member])
        else:
            raw = await self._command(self._client.get, base + member)
        return None if raw is None else _shared(raw)

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
        check_names(thread, tenant, key)
        check_version(expected)
        ms = _ms(resolve_ttl(ttl, self.ttl))
        data, back = encode(value, "the shared value {!r}", key)
        base = self._base(tenant, thread)
        member = "s:" + esc(key)
        keys = [base + member, base + "i", self._activity(tenant)]
        reply = await self._run(
            lua.COMPARE_AND_SET, keys, [member, ms, esc(thread), data, expected]
        )
        if isinstance(reply, list):
            current = _shared(reply[0]) if reply[0] else None
            raise VersionConflict(thread, key, expected, current, tenant=tenant)
        return Versioned(back, int(reply))

    # --- whole threads ---------------------------------------------------------------

    async def clear(self, thread: str, *, tenant: str = "") -> None:
        check_names(thread, tenant)
        base = self._base(tenant, thread)
        await self._run(lua.CLEAR, [base + "i", self._activity(tenant)], [base, esc(thread)])

    async def clear_if_unchanged(
        self, thread: str, last_active: float, *, tenant: str = ""
    ) -> bool:
        check_names(thread, tenant)
        last_active = check_time(last_active)
        base = self._base(tenant, thread)
        keys = [base + "i", self._activity(tenant)]
        return bool(await self._run(lua.CLEAR_IF, keys, [base, esc(thread), repr(last_active)]))

    async def threads(self, *, tenant: str = "", idle_for: float = 0) -> list[ThreadActivity]:
        check_names("-", tenant)
        idle = check_idle_for(idle_for)
        tenant_base = self.prefix + esc(tenant) + ":"
        flat = await self._run(lua.THREADS, [self._activity(tenant)], [tenant_base, repr(idle)])
        return [
            ThreadActivity(unquote(flat[i].decode()), tenant, float(flat[i + 1]))
            for i in range(0, len(flat), 2)
        ]

    async def snapshot(self, thread: str, *, tenant: str = "") -> SessionSnapshot:
        check_names(thread, tenant)
        base = self._base(tenant, thread)
        last, flat = await self._run(
            lua.SNAPSHOT, [base + "i", self._activity(tenant)], [base, esc(thread)]
        )
        if not flat:
            return SessionSnapshot(thread, tenant)
        values: dict[str, Any] = {}
        shared: dict[str, Versioned] = {}
        messages: list[Any] = []
        for i in range(0, len(flat), 2):
            member, raw = flat[i].decode(), flat[i + 1]
            if member == "m":
                messages = [decode(d) for d in raw]
            elif member.startswith("v:"):
                values[unquote(member[2:])] = decode(raw)
            else:
                shared[unquote(member[2:])] = _shared(raw)
        return SessionSnapshot(
            thread,
            tenant,
            values=dict(sorted(values.items())),
            messages=messages,
            shared=dict(sorted(shared.items())),
            last_active=float(last) if last else 0.0,
        )

    async def restore(self, snapshot: SessionSnapshot) -> None:
        encoded = encode_snapshot(snapshot)  # everything checked before anything changes
        pairs: list[str | bytes] = []
        for key, data in encoded.values.items():
            pairs += ["v:" + esc(key), data]
        for key, (version, data) in encoded.shared.items():
            pairs += ["s:" + esc(key), b"%d|%s" % (version, data)]
        base = self._base(snapshot.tenant, snapshot.thread)
        await self._run(
            lua.RESTORE,
            [base + "i", self._activity(snapshot.tenant)],
            [base, esc(snapshot.thread), _ms(self.ttl), len(pairs) // 2, *pairs, *encoded.messages],
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned:
            await self._client.aclose()

    # --- internals -------------------------------------------------------------------

    def _base(self, tenant: str, thread: str) -> str:
        return f"{self.prefix}{esc(tenant)}:{esc(thread)}:"

    def _activity(self, tenant: str) -> str:
        return f"{self.prefix}{esc(tenant)}:%threads"

    async def _run(
        self, script: lua.Script, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Any:
        try:
            return await self._command(self._client.evalsha, script.sha, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
            await self._command(self._client.script_load, script.source)
            return await self._command(self._client.evalsha, script.sha, len(keys), *keys, *args)

    async def _command(self, command: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """One client call: refused once closed; a lost or refused connection becomes a
        StoreUnavailableError naming the server (redis-py's error chained)."""
        if self._closed:
            raise StoreError(
                f"this RedisSessionMemory ({self._where()}) is closed: open a new one to use it"
            )
        try:
            return await command(*args)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise StoreUnavailableError(
                f"session memory cannot reach Redis at {self._where()} "
                f"({type(exc).__name__}: {exc}): check that the server runs and that the "
                "URL (host, port, password, TLS) is right"
            ) from exc

    def _where(self) -> str:
        """The server, for messages (no password)."""
        kwargs = self._client.connection_pool.connection_kwargs
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}"
        return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
