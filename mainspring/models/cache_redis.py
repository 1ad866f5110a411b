"""A response cache in Redis: shared by every process and host that reaches the server.

One string per entry under ``prefix + key``, set with ``PX`` so Redis expires it;
``clear`` removes only this cache's keys (SCAN by prefix, then UNLINK).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from .cache import check_ttl, decode_entry, encode_entry
from .messages import ModelResponse


class RedisCache:
    """Responses in Redis at ``url`` (``redis://host:port/db``), or on a client you pass
    (then you close it); keys start with ``prefix``."""

    def __init__(
        self,
        url_or_client: str | redis.Redis = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "mainspring:cache:",
        default_ttl: float | None = None,
    ) -> None:
        self._owned = isinstance(url_or_client, str)
        self._client: redis.Redis = (
            redis.Redis.from_url(url_or_client) if isinstance(url_or_client, str) else url_or_client
        )
        if self._client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisCache stores bytes: give it a client made with decode_responses=False"
            )
        self.prefix = prefix
        self.default_ttl = check_ttl(default_ttl)

    async def get(self, key: str) -> ModelResponse | None:
        data: Any = await self._client.get(self.prefix + key)
        return decode_entry(data)

    async def set(self, key: str, response: ModelResponse, ttl: float | None = None) -> None:
        ttl = self.default_ttl if check_ttl(ttl) is None else ttl
        if ttl is not None and ttl <= 0:
            await self.delete(key)
            return
        px = None if ttl is None else max(1, round(ttl * 1000))
        await self._client.set(self.prefix + key, encode_entry(response), px=px)

    async def delete(self, key: str) -> None:
        await self._client.delete(self.prefix + key)

    async def clear(self) -> None:
        batch: list[Any] = []
        async for name in self._client.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                await self._client.unlink(*batch)
                batch = []
        if batch:
            await self._client.unlink(*batch)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
