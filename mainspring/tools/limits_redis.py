"""Tool limits in Redis: token buckets, slots and breakers shared by every process.

One string of JSON per key (``prefix + key``), expiring ``ttl`` after its last
update. An update is optimistic: WATCH the key, read it and Redis's clock (``TIME``,
so hosts need not agree), apply the pure update, write in MULTI/EXEC; a concurrent
writer makes EXEC fail and the update is applied again to what it wrote.
"""

from __future__ import annotations

import json
import random
from typing import Any, TypeVar

import anyio
import redis.asyncio as redis
from redis.exceptions import WatchError

from .limits import Update

T = TypeVar("T")


class RedisLimits:
    """Limits in Redis at ``url`` (``redis://host:port/db``), or on a client you pass (then
    you close it); keys start with ``prefix``. ``poll``: how often a waiting call looks
    for a free slot."""

    shared = True

    def __init__(
        self,
        url_or_client: str | redis.Redis = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "mainspring:tools:",
        poll: float = 0.02,
    ) -> None:
        self._owned = isinstance(url_or_client, str)
        self._client: redis.Redis = (
            redis.Redis.from_url(url_or_client) if isinstance(url_or_client, str) else url_or_client
        )
        self.prefix = prefix
        self.poll = poll
        self.url = url_or_client if isinstance(url_or_client, str) else repr(url_or_client)

    async def update(self, key: str, fn: Update[T], ttl: float) -> T:
        name = self.prefix + key
        px = max(1, round(ttl * 1000))
        async with self._client.pipeline(transaction=True) as pipe:
            for conflicts in range(1000):
                try:
                    await pipe.watch(name)
                    raw: Any = await pipe.get(name)
                    seconds, micros = await pipe.time()
                    state, answer = fn(
                        None if raw is None else json.loads(raw), seconds + micros / 1e6
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if state is None:
                        pipe.delete(name)
                    else:
                        pipe.set(name, json.dumps(state, separators=(",", ":")), px=px)
                    await pipe.execute()
                    return answer
                except WatchError:
                    await anyio.sleep(random.random() * 0.001 * min(conflicts + 1, 10))
        raise RuntimeError(f"tool limits: {name!r} changed under 1000 updates in a row")

    async def snapshot(self, prefix: str = "") -> dict[str, Any]:
        names: list[Any] = [
            n
            async for n in self._client.scan_iter(
                match=_glob(self.prefix + prefix) + "*", count=500
            )
        ]
        seconds, micros = await self._client.time()
        found: dict[str, Any] = {"now": seconds + micros / 1e6}
        values: list[Any] = await self._client.mget(names) if names else []
        for name, raw in zip(names, values, strict=True):
            if raw is not None:
                found[name.decode()[len(self.prefix) :]] = json.loads(raw)
        return found

    async def released(self, key: str, timeout: float) -> None:
        await anyio.sleep(min(timeout, self.poll * (0.5 + random.random())))

    async def clear(self) -> None:
        """Delete every key under this backend's prefix (tests, resets)."""
        names = [n async for n in self._client.scan_iter(match=_glob(self.prefix) + "*", count=500)]
        if names:
            await self._client.unlink(*names)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


def _glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
