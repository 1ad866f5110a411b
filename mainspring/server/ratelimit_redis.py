"""Rate limits shared by every API server: the token buckets of ``ratelimit.py`` in Redis.

``ServerConfig(rate_limit_url="redis://...")`` (``mainspring serve --rate-limit-store``).
One hash per caller (``prefix + caller``: ``tokens``, ``at``), updated by one Lua script
(atomic in Redis, one round trip) on Redis's clock, so servers need not agree on the time;
a bucket idle long enough to be full again expires. Redis unreachable at startup stops
the server with an error saying so; unreachable later, each server limits on its own
(its local buckets) until Redis answers again, and says so once in its log.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..errors import StoreUnavailableError
from .ratelimit import RateLimiter

log = logging.getLogger("mainspring.server")

# KEYS[1]: the bucket; ARGV: rate (tokens a second), burst. Returns the seconds until a
# token is back (0: one was taken), as a string (Lua numbers come back as integers).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1])
local at = tonumber(held[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimitStoreError(StoreUnavailableError):
    """The rate limit's Redis cannot be reached when the server starts."""


class RedisRateLimiter(RateLimiter):
    """``RateLimiter``'s buckets in Redis at ``url``; its local buckets serve while Redis
    is down. ``open`` checks Redis is there (the server's startup)."""

    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        *,
        prefix: str = "mainspring:ratelimit:",
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(rate, burst)
        if client is None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"rate_limit_url {url!r}: give a Redis URL (redis://host:6379/0, rediss://... "
                "for TLS, unix:///path/redis.sock)"
            )
        self.url = url
        self.prefix = prefix
        self._owned = client is None
        self._client: redis.Redis = client or redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2
        )
        self._script: Any = self._client.register_script(_TAKE)
        self._down = False

    async def open(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise RateLimitStoreError(
                f"the rate limit store {self.url} cannot be reached ({exc}); start Redis there, "
                "fix --rate-limit-store (ServerConfig.rate_limit_url), or drop it to limit "
                "each server on its own"
            ) from None

    async def acquire(self, caller: str) -> float:
        if not self.enabled:
            return 0.0
        try:
            raw = await self._script(keys=[self.prefix + caller], args=[self.rate, self.burst])
        except (RedisError, OSError) as exc:
            if not self._down:
                log.error(
                    "rate limit store %s unreachable (%s): limiting per server until it is back",
                    self.url,
                    exc,
                )
                self._down = True
            return self.take(caller)
        if self._down:
            log.warning("rate limit store %s is back: limits are shared again", self.url)
            self._down = False
        return float(raw)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
