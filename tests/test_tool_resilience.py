"""Tool resilience in memory: circuit breaker, rate and concurrency limits (per tool and per
tenant), fallbacks (another tool, a cached result, a person), metrics and the CLI
(issue 12, item 2). The backends' shared conformance is tests/test_tool_limits.py."""

from __future__ import annotations

import time
from typing import Any, TypedDict

import anyio
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from mainspring import END, START, Context, Graph, Runtime
from mainspring.events import EffectFinished
from mainspring.telemetry.metrics.prometheus import PrometheusSink
from mainspring.tools import Tool, ToolArgumentsError, Toolbox, ToolContext, ToolFailedError
from mainspring.tools.breaker import Breaker
from mainspring.tools.errors import CircuitOpenError, NeedsHuman, RateLimitedToolError
from mainspring.tools.fallback import AskHuman, CachedResult
from mainspring.tools.resilience import Resilience

pytestmark = pytest.mark.anyio

FAST = Breaker(failures=3, failure_rate=None, cooldown=0.3)


class Flaky:
    """A tool function that fails while ``failing`` is set, and counts its calls."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0
        self.delay = 0.0

    async def __call__(self, q: str) -> str:
        self.calls += 1
        await anyio.sleep(self.delay)
        if self.failing:
            raise ConnectionError("upstream down")
        return f"answer to {q}"


def flaky_tool(fn: Flaky, **options: Any) -> Tool:
    return Tool(fn.__call__, name=options.pop("name", "search"), **options)


async def test_the_breaker_opens_refuses_probes_once_and_closes() -> None:
    fn = Flaky()
    box = Toolbox([flaky_tool(fn, breaker=FAST)])
    for _ in range(3):
        with pytest.raises(ToolFailedError):
            await box.call("search", {"q": "x"})
    with pytest.raises(ToolArgumentsError):  # argument errors never reach the breaker
        await box.call("search", {"q": 1})
    with pytest.raises(CircuitOpenError, match="open after repeated failures"):
        await box.call("search", {"q": "x"})
    assert fn.calls == 3  # refused without calling
    [state] = await box.resilience.states()
    assert state.breaker == "open" and state.retry_in is not None and state.retry_in > 0
    await anyio.sleep(0.35)
    with pytest.raises(ToolFailedError):  # the probe fails: open again
        await box.call("search", {"q": "x"})
    with pytest.raises(CircuitOpenError):
        await box.call("search", {"q": "x"})
    await anyio.sleep(0.35)
    fn.failing = True
    results: list[str] = []

    async def probe_slowly() -> None:
        fn.failing, fn.delay = False, 0.1
        results.append(await box.call("search", {"q": "probe"}))

    async def second() -> None:
        await anyio.sleep(0.02)
        try:
            await box.call("search", {"q": "second"})
        except CircuitOpenError:
            results.append("refused while half-open")

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe_slowly)
        tg.start_soon(second)
    assert sorted(results) == ["answer to probe", "refused while half-open"]
    assert await box.call("search", {"q": "y"}) == "answer to y"  # closed again
    assert (await box.resilience.states())[0].breaker == "closed"


async def test_a_failure_rate_over_the_window_opens_it() -> None:
    fn = Flaky()
    cfg = Breaker(failures=None, failure_rate=0.5, window=10, min_calls=4, cooldown=5)
    box = Toolbox([flaky_tool(fn, breaker=cfg)])
    fn.failing = False
    await box.call("search", {"q": "a"})
    fn.failing = True
    for _ in range(2):  # 2 of 3 failed, fewer than min_calls: still closed
        with pytest.raises(ToolFailedError):
            await box.call("search", {"q": "a"})
    fn.failing = False
    await box.call("search", {"q": "a"})  # 2 of 4 failed: 50%, opens
    with pytest.raises(CircuitOpenError):
        await box.call("search", {"q": "a"})


async def test_the_rate_limit_spaces_calls_and_refuses_past_its_wait() -> None:
    box = Toolbox([Tool(_echo, rate=20, burst=2, limit_wait=1.0)])
    started = time.monotonic()
    for i in range(6):  # two at once, then one every 50 ms
        await box.call("_echo", {"q": str(i)})
    assert time.monotonic() - started >= 0.18
    strict = Toolbox([Tool(_echo, rate=1, burst=1, limit_wait=0.05)])
    await strict.call("_echo", {"q": "a"})
    with pytest.raises(RateLimitedToolError, match="rate limit"):
        await strict.call("_echo", {"q": "b"})


async def test_the_concurrency_limit_holds_and_a_waiter_gives_up_in_bounded_time() -> None:
    running, peak = 0, 0

    async def slow(q: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.05)
        running -= 1
        return q

    box = Toolbox([Tool(slow, concurrency=2, limit_wait=5)])
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(box.call, "slow", {"q": str(i)})
    assert peak == 2
    tight = Toolbox([Tool(slow, concurrency=1, limit_wait=0.02)])
    refused: list[str] = []

    async def one(i: int) -> None:
        try:
            await tight.call("slow", {"q": str(i)})
        except RateLimitedToolError as exc:
            refused.append(str(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 1)
        tg.start_soon(one, 2)
    assert len(refused) == 1 and "concurrent calls are busy" in refused[0]
    assert (await tight.resilience.states())[0].in_flight == 0  # the slot came back


async def test_limits_per_tenant_keep_tenants_apart() -> None:
    box = Toolbox([Tool(_echo, rate=1, burst=1, limit_wait=0, limit_per="tenant")])
    acme, globex = ToolContext("_echo", tenant="acme"), ToolContext("_echo", tenant="globex")
    await box.call("_echo", {"q": "a"}, acme)
    await box.call("_echo", {"q": "a"}, globex)  # its own bucket
    with pytest.raises(RateLimitedToolError):
        await box.call("_echo", {"q": "b"}, acme)
    tenants = {s.tenant for s in await box.resilience.states()}
    assert {"acme", "globex"} <= tenants


async def test_fallbacks_another_tool_a_cached_result_then_a_person() -> None:
    fn = Flaky()
    fn.failing = False
    backup_calls: list[str] = []

    async def backup(q: str) -> str:
        backup_calls.append(q)
        return f"backup: {q}"

    main = flaky_tool(fn, breaker=FAST, fallback=[CachedResult(ttl=60), "backup"])
    box = Toolbox([main, Tool(backup)])
    assert await box.call("search", {"q": "known"}) == "answer to known"
    fn.failing = True
    for _ in range(3):
        with pytest.raises(ToolFailedError):
            await box.call("search", {"q": "other"})
    assert await box.call("search", {"q": "known"}) == "answer to known"  # the cached one
    assert await box.call("search", {"q": "new"}) == "backup: new"  # nothing cached
    assert backup_calls == ["new"]
    assert await box.call("search", {"q": "known"}, ToolContext("search", tenant="t2")) == (
        "backup: known"
    )  # a tenant never gets another's cached result

    human = Toolbox([flaky_tool(fn, breaker=FAST, fallback=AskHuman("search is down"))])
    for _ in range(3):
        with pytest.raises(ToolFailedError):
            await human.call("search", {"q": "x"})
    with pytest.raises(NeedsHuman) as caught:
        await human.call("search", {"q": "x"})
    payload = caught.value.payload()
    assert payload["tool"] == "search" and payload["args"] == {"q": "x"}
    assert payload["reason"].startswith("search is down")
    rebuilt = NeedsHuman(str(caught.value))  # as a resumed run rebuilds it from the journal
    assert rebuilt.payload() == payload


async def test_a_chain_with_nothing_left_raises_the_refusal_saying_what_was_tried() -> None:
    box = Toolbox(
        [
            Tool(_echo, rate=1, burst=1, limit_wait=0, fallback=[CachedResult(1), "echo2"]),
            Tool(_echo, name="echo2", rate=1, burst=1, limit_wait=0, fallback="_echo"),
        ]
    )
    await box.call("_echo", {"q": "a"})
    await box.call("echo2", {"q": "a"})
    with pytest.raises(RateLimitedToolError, match="fallbacks tried: no result cached") as caught:
        await box.call("_echo", {"q": "b"})
    assert "already tried in this chain" in str(caught.value)  # echo2 -> _echo: no loop


class S(TypedDict, total=False):
    out: list[str]


async def test_in_a_run_refusals_and_fallbacks_are_journaled_effects() -> None:
    fn = Flaky()
    box = Toolbox([flaky_tool(fn, breaker=FAST), flaky_tool(fn, name="cached", breaker=FAST)])

    async def act(s: S, ctx: Context) -> S:
        out: list[str] = []
        for _ in range(4):
            try:
                await ctx.tool("search", q="x")
            except (ToolFailedError, CircuitOpenError) as exc:
                out.append(type(exc).__name__)
        return {"out": out}

    g = Graph(S)
    g.node("act", act)
    g.edge(START, "act")
    g.edge("act", END)
    async with Runtime.open("memory://", tools=box) as rt:
        state = await rt.run(g.compile(), {})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["out"] == ["ToolFailedError"] * 3 + ["CircuitOpenError"]
    errors = [
        e.data.error.type for e in events if isinstance(e.data, EffectFinished) and e.data.error
    ]
    assert errors[-1] == "CircuitOpenError"


async def test_metrics_count_calls_refusals_and_the_breaker_state() -> None:
    sink = PrometheusSink(CollectorRegistry())
    fn = Flaky()
    box = Toolbox([flaky_tool(fn, breaker=FAST)], resilience=Resilience(metrics=sink))
    for _ in range(4):
        with pytest.raises((ToolFailedError, CircuitOpenError)):
            await box.call("search", {"q": "x"})

    def value(name: str, **labels: str) -> float | None:
        return sink.registry.get_sample_value(name, labels)

    assert value("mainspring_tool_calls_total", tool="search", outcome="failed") == 3
    assert value("mainspring_tool_calls_total", tool="search", outcome="rejected") == 1
    assert value("mainspring_tool_rejections_total", tool="search", reason="breaker") == 1
    assert value("mainspring_tool_breaker_state", tool="search") == 2  # open
    await anyio.sleep(0.35)
    fn.failing = False
    await box.call("search", {"q": "x"})
    assert value("mainspring_tool_breaker_state", tool="search") == 0


def test_limits_that_cannot_work_are_refused_when_the_tool_is_made() -> None:
    with pytest.raises(ValueError, match="burst= needs rate="):
        Tool(_echo, burst=3)
    with pytest.raises(ValueError, match="cannot fall back on itself"):
        Tool(_echo, fallback="_echo")
    with pytest.raises(TypeError, match="fallback= takes"):
        Tool(_echo, fallback=3)  # type: ignore[arg-type]


def test_the_cli_prints_each_tools_breaker_and_limits() -> None:
    from mainspring.cli import app

    result = CliRunner().invoke(app, ["tools", "--tools", "tests.test_tool_resilience:BOX"])
    assert result.exit_code == 0, result.output
    assert "search" in result.output and "closed" in result.output
    assert "/5 @ 10/s" in result.output and "0/3" in result.output
    result = CliRunner().invoke(app, ["tools", "--limits", "ftp://x"])
    assert result.exit_code == 2 and "limits URL" in result.output


async def _echo(q: str) -> str:
    return q


BOX = Toolbox([flaky_tool(Flaky(), breaker=True, rate=10, burst=5, concurrency=3)])
