"""Rate limits shared by every API server: the token buckets of ``ratelimit.py`` in Redis.

``ServerConfig(rate_limit_url="redis://...")`` (``mainspring serve --rate-limit-store``).
One hash per caller (``prefix + caller``: ``tokens``, ``at``), updated by one Lua script
(atomic in Redis, one round trip) on Redis's clock, so servers need not agree on the time;
a bucket idle long enough to be full again expires.

Redis unreachable (at startup or later), the server falls back to its own buckets (the
same limits, per process) and says so in its log, with the URL and what to fix; it tries
Redis again every ``retry_every`` seconds (not on every request: an unreachable host
would make each one wait), and says so when the limits are shared again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

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


class RedisRateLimiter(RateLimiter):
    """``RateLimiter``'s buckets in Redis at ``url``; its local buckets serve while Redis
    cannot be reached."""

    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        *,
        prefix: str = "mainspring:ratelimit:",
        client: redis.Redis | None = None,
        retry_every: float = 5.0,
    ) -> None:
        super().__init__(rate, burst)
        if client is None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"rate_limit_url {url!r}: give a Redis URL (redis://host:6379/0, rediss://... "
                "for TLS, unix:///path/redis.sock)"
            )
        self.url = url
        self.prefix = prefix
        self.retry_every = retry_every
        self._owned = client is None
        self._client: redis.Redis = client or redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2
        )
        self._script: Any = self._client.register_script(_TAKE)
        self.shared = True  # False while Redis cannot be reached: local buckets serve
        self._retry_at = 0.0

    async def open(self) -> None:
        """Look for Redis once (the server's startup): said at once if it is not there."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            self._lost(exc)

    async def acquire(self, caller: str) -> float:
        if not self.enabled:
            return 0.0
        if not self.shared and time.monotonic() < self._retry_at:
            return self.take(caller)
        try:
            raw = await self._script(keys=[self.prefix + caller], args=[self.rate, self.burst])
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return self.take(caller)
        if not self.shared:
            log.warning("rate limit store %s is reachable again: limits are shared", self.url)
            self.shared = True
        return float(raw)

    def _lost(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_every
        if self.shared:
            log.error(
                "the rate limit store %s cannot be reached (%s): each server limits on its own "
                "until it can (start Redis there, or fix --rate-limit-store / "
                "ServerConfig.rate_limit_url)",
                self.url,
                exc,
            )
            self.shared = False

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
