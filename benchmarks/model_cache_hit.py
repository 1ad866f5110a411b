"""Cache-hit cost: key a request, then ``get`` a hit, on each response cache backend.

Run: ``python benchmarks/model_cache_hit.py`` (Redis at 127.0.0.1:6379 if it answers).
The target is a whole in-memory hit path (key + get) of at most 50 us.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import anyio

from mainspring.models.cache import MemoryCache, ResponseCache, cache_key
from mainspring.models.cache_sqlite import SQLiteCache
from mainspring.models.messages import ModelRequest, ModelResponse, Usage, assistant, system, user

REQUEST = ModelRequest(
    model="gpt-4o-mini",
    messages=[
        system("You are a helpful assistant. " * 10),
        user("Summarise this: " + "word " * 200),
    ],
    temperature=0.2,
    params={"seed": 1},
)
RESPONSE = ModelResponse(assistant("An answer of a few sentences. " * 10), model="gpt-4o-mini",
                         usage=Usage(300, 60))  # fmt: skip


async def measure(name: str, cache: ResponseCache, n: int) -> None:
    await cache.set(cache_key(REQUEST), RESPONSE)
    key_us, get_us, both_us = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        key = cache_key(REQUEST)
        t1 = time.perf_counter()
        hit = await cache.get(key)
        t2 = time.perf_counter()
        assert hit is not None
        key_us.append((t1 - t0) * 1e6)
        get_us.append((t2 - t1) * 1e6)
        both_us.append((t2 - t0) * 1e6)

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[p - 1] if p < 100 else max(xs)

    print(f"{name:7s} key median {statistics.median(key_us):6.1f} us | get median "
          f"{statistics.median(get_us):6.1f} us | key+get median {statistics.median(both_us):6.1f}"
          f" p99 {q(both_us, 99):6.1f} us  (n={n})")  # fmt: skip
    await cache.aclose()


async def main() -> None:
    await measure("memory", MemoryCache(), 20_000)
    with tempfile.TemporaryDirectory() as tmp:
        await measure("sqlite", SQLiteCache(Path(tmp) / "c.db"), 5_000)
    try:
        from mainspring.models.cache_redis import RedisCache

        redis_cache = RedisCache("redis://127.0.0.1:6379/0", prefix="mainspring:bench:")
        await redis_cache.clear()
        await measure("redis", redis_cache, 2_000)
    except Exception as exc:  # no Redis here: the other numbers still stand
        print(f"redis   skipped: {exc}")


if __name__ == "__main__":
    anyio.run(main)
