"""Rate limits shared through Redis (docs/server.md, "Shared rate limits"): two API servers
on one Redis draw from one bucket per key; Redis unreachable (at startup or later) leaves
each server its own buckets, said in its log, until Redis answers again."""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
import redis.asyncio as aredis

from mainspring.server import ServerConfig, create_app
from mainspring.server.keys import Scope
from mainspring.server.keys.memory import MemoryKeyStore
from mainspring.server.ratelimit_redis import _TAKE, RedisRateLimiter
from tests.cli_graphs import support
from tests.conftest import service_missing
from tests.test_server_api import serve

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("MAINSPRING_REDIS_URL", "redis://127.0.0.1:6379/0")
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@functools.cache
def redis_unavailable(url: str = REDIS_URL) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def redis_url() -> str:
    missing = redis_unavailable()
    if missing:
        service_missing(missing)
    return REDIS_URL


@pytest.fixture
async def two_servers(redis_url: str) -> AsyncIterator[tuple[list[httpx.AsyncClient], str]]:
    """Two apps (two API servers) on one key store and one Redis; a key's header."""
    keys = MemoryKeyStore()
    config = ServerConfig(rate=0.001, burst=3, rate_limit_url=redis_url)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                serve(create_app("memory://", graphs=[support], keys=keys, config=config))
            )
            for _ in range(2)
        ]
        _, key = await keys.create("acme", frozenset({Scope.READ}))
        yield clients, key


async def test_two_servers_share_one_burst_per_key(
    two_servers: tuple[list[httpx.AsyncClient], str],
) -> None:
    (a, b), key = two_servers
    headers = {"Authorization": f"Bearer {key}"}
    codes = [(await c.get("/v1/graphs", headers=headers)).status_code for c in (a, b, a, b)]
    assert codes == [200, 200, 200, 429]  # a burst of 3 in all, not 3 per server
    refused = await a.get("/v1/graphs", headers=headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "at most" in refused.json()["error"]["message"]


async def test_unreachable_redis_at_startup_leaves_each_server_its_own_limits_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = MemoryKeyStore()
    config = ServerConfig(rate=0.001, burst=2, rate_limit_url=DEAD_URL)
    app = create_app("memory://", config=config, graphs=[support], keys=keys)
    with caplog.at_level(logging.ERROR, logger="mainspring.server"):
        async with serve(app) as client:
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(said) == 1 and DEAD_URL in said[0] and "cannot be reached" in said[0]
            _, key = await keys.create("acme", frozenset({Scope.READ}))
            headers = {"Authorization": f"Bearer {key}"}
            codes = [(await client.get("/v1/graphs", headers=headers)).status_code
                     for _ in range(3)]  # fmt: skip
    assert codes == [200, 200, 429]  # the same limits, this server's own buckets


def test_a_rate_limit_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="give a Redis URL"):
        create_app("memory://", config=ServerConfig(auth=False, rate_limit_url="http://x"))


async def test_redis_lost_later_leaves_each_server_its_own_buckets_then_shares_again(
    redis_url: str,
) -> None:
    limiter = RedisRateLimiter(redis_url, rate=0.001, burst=2, retry_every=0)
    caller = f"key:{uuid.uuid4().hex}"
    real = limiter._client
    dead = aredis.Redis.from_url(DEAD_URL, socket_connect_timeout=1)
    try:
        await limiter.open()
        assert shared(limiter)
        limiter._script = dead.register_script("return '0'")  # Redis lost
        waits = [await limiter.acquire(caller) for _ in range(3)]
        assert not shared(limiter)
        assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # local buckets, same limits
        limiter._script = real.register_script(_TAKE)  # back
        assert await limiter.acquire(caller) == 0.0  # Redis's bucket for the key: full
        assert shared(limiter)
    finally:
        await dead.aclose()
        await limiter.aclose()


def shared(limiter: RedisRateLimiter) -> bool:
    return limiter.shared  # read through a call: the test changes it under mypy's narrowing
