"""The tool limits backends: one conformance suite over memory, Redis and PostgreSQL, and
two processes sharing a rate limit and a concurrency limit through Redis or PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mainspring.tools.breaker import ADMIT, PROBE, Breaker, admit, record
from mainspring.tools.limits import (
    LimitsBackend,
    MemoryLimits,
    give_slot,
    take_slot,
    take_token,
)
from mainspring.tools.limits_url import open_limits
from tests.conftest import postgres_schema_url, service_missing
from tests.test_model_cache import REDIS_URL, redis_unavailable

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "redis", "postgres"]
SHARED = ["redis", "postgres"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def limits_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    kind = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "redis":
        reason = redis_unavailable()
        if reason is not None:
            service_missing(reason)
        yield REDIS_URL
    else:
        async with postgres_schema_url() as url:
            yield url


@pytest.fixture
async def backend(limits_url: str) -> AsyncIterator[LimitsBackend]:
    made = open_limits(limits_url)
    if hasattr(made, "prefix"):
        made.prefix = f"mainspring:test:{uuid.uuid4().hex[:10]}:"
    try:
        yield made
    finally:
        clear = getattr(made, "clear", None)
        if clear is not None:
            await clear()
        await made.aclose()


@pytest.mark.parametrize("limits_url", BACKENDS, indirect=True)
async def test_a_token_bucket_admits_its_burst_then_spaces_and_refuses(
    backend: LimitsBackend,
) -> None:
    take = take_token(rate=10, burst=2, max_wait=0.15)
    assert [await backend.update("r:t", take, 60) for _ in range(2)] == [0.0, 0.0]
    wait = await backend.update("r:t", take, 60)
    assert wait is not None and 0.05 < wait <= 0.1  # taken ahead: one token in ~0.1 s
    assert await backend.update("r:t", take, 60) is None  # the next is ~0.2 s away: refused
    await anyio.sleep(0.35)
    assert await backend.update("r:t", take, 60) == 0.0  # refilled


@pytest.mark.parametrize("limits_url", BACKENDS, indirect=True)
async def test_slots_hold_release_and_expire(backend: LimitsBackend) -> None:
    assert await backend.update("c:t", take_slot(2, "a", 60), 60)
    assert await backend.update("c:t", take_slot(2, "b", 0.2), 60)
    assert not await backend.update("c:t", take_slot(2, "c", 60), 60)
    assert await backend.update("c:t", give_slot("a"), 60) == 1
    assert await backend.update("c:t", take_slot(2, "c", 60), 60)
    await anyio.sleep(0.3)  # b's holder died: its slot expires
    assert await backend.update("c:t", take_slot(2, "d", 60), 60)
    snap = await backend.snapshot()
    assert set(snap["c:t"]) == {"c", "d"} and isinstance(snap["now"], float)


@pytest.mark.parametrize("limits_url", BACKENDS, indirect=True)
async def test_a_breaker_opens_cools_down_probes_once_and_closes(backend: LimitsBackend) -> None:
    cfg = Breaker(failures=2, failure_rate=None, cooldown=0.3)
    for _ in range(2):
        assert await backend.update("b:t", admit(cfg, 5), 60) == ADMIT
        await backend.update("b:t", record(cfg, True, False), 60)
    assert await backend.update("b:t", admit(cfg, 5), 60) > 0  # open
    await anyio.sleep(0.35)
    assert await backend.update("b:t", admit(cfg, 5), 60) == PROBE
    assert await backend.update("b:t", admit(cfg, 5), 60) > 0  # one probe at a time
    assert await backend.update("b:t", record(cfg, False, True), 60) == "closed"
    assert await backend.update("b:t", admit(cfg, 5), 60) == ADMIT
    assert "b:t" not in await backend.snapshot()  # a healthy closed breaker stores nothing


@pytest.mark.parametrize("limits_url", BACKENDS, indirect=True)
async def test_concurrent_updates_are_atomic(backend: LimitsBackend) -> None:
    admitted: list[bool] = []

    async def one(i: int) -> None:
        admitted.append(await backend.update("c:many", take_slot(5, f"s{i}", 60), 60))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    assert admitted.count(True) == 5


def test_memory_is_the_default_and_urls_choose_the_backend() -> None:
    assert isinstance(open_limits(None), MemoryLimits)
    with pytest.raises(ValueError, match="redis://"):
        open_limits("mysql://x")


CHILD = textwrap.dedent(
    """
    import json, sys, time
    import anyio
    from mainspring.tools import Tool, Toolbox
    from mainspring.tools.limits_url import open_limits
    from mainspring.tools.resilience import Resilience

    url, prefix, mode, out = sys.argv[1:5]

    async def work(q: str) -> str:
        started = time.time()
        await anyio.sleep(0.15 if mode == "concurrency" else 0)
        with open(out, "a") as f:
            f.write(json.dumps([started, time.time()]) + "\\n")
        return q

    async def main() -> None:
        backend = open_limits(url)
        if hasattr(backend, "prefix"):
            backend.prefix = prefix
        limits = {"concurrency": 2} if mode == "concurrency" else {"rate": 10, "burst": 1}
        box = Toolbox([Tool(work, limit_wait=30, **limits)], resilience=Resilience(backend=backend))
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(box.call, "work", {"q": str(i)})
        await backend.aclose()

    anyio.run(main)
    """
)


@pytest.mark.parametrize("limits_url", SHARED, indirect=True)
@pytest.mark.parametrize("mode", ["rate", "concurrency"])
async def test_two_processes_share_the_rate_and_concurrency_limits(
    limits_url: str, mode: str, tmp_path: Path
) -> None:
    prefix = f"mainspring:test:{uuid.uuid4().hex[:10]}:"
    out = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, limits_url, prefix, mode, str(out)]
    with anyio.fail_after(60):
        children = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE) for _ in range(2)]
        for child in children:
            _, err = await anyio.to_thread.run_sync(child.communicate)
            assert child.returncode == 0, err.decode()
    calls = sorted(json.loads(line) for line in out.read_text().splitlines())
    assert len(calls) == 10
    if mode == "rate":  # 10 calls at 10/s with a burst of 1: spread over ~0.9 s
        starts = [c[0] for c in calls]
        assert starts[-1] - starts[0] >= 0.75
        for i in range(len(starts) - 3):
            assert starts[i + 3] - starts[i] >= 0.2  # never 4 calls within 0.3 s
    else:  # never more than 2 calls at once, across both processes
        edges = sorted([(c[0], 1) for c in calls] + [(c[1], -1) for c in calls])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        assert peak <= 2
        assert calls[-1][1] - calls[0][0] >= 0.6  # 10 calls of 0.15 s, 2 at a time
