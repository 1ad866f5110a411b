"""Rate limits shared through Redis (docs/server.md, "Shared rate limits"): two API servers
on one Redis draw from one bucket per key; Redis unreachable at startup stops the server
with an error that says so; Redis lost later leaves each server its own buckets."""

from __future__ import annotations

import functools
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
from mainspring.server.ratelimit_redis import RateLimitStoreError, RedisRateLimiter
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


async def test_unreachable_redis_at_startup_stops_the_server_saying_so() -> None:
    app = create_app(
        "memory://", config=ServerConfig(auth=False, rate_limit_url=DEAD_URL), graphs=[support]
    )
    with pytest.raises(RateLimitStoreError, match="cannot be reached") as caught:
        async with serve(app):
            pass
    assert "--rate-limit-store" in str(caught.value)


def test_a_rate_limit_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="give a Redis URL"):
        create_app("memory://", config=ServerConfig(auth=False, rate_limit_url="http://x"))


async def test_redis_lost_later_leaves_each_server_its_own_buckets() -> None:
    client = aredis.Redis.from_url(DEAD_URL, socket_connect_timeout=1)
    limiter = RedisRateLimiter(DEAD_URL, rate=0.001, burst=2, client=client)
    caller = f"key:{uuid.uuid4().hex}"
    try:
        waits = [await limiter.acquire(caller) for _ in range(3)]
    finally:
        await client.aclose()
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # local buckets, same limits
