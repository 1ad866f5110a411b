"""W9: the model gateway's overhead per call, against raw httpx and LiteLLM's Router,
side by side in one run against the same local upstream (``upstream.py``, a process of
its own answering a fixed chat completion or SSE stream at once).

Per call, sampled in interleaved rounds (best of N samples, each the mean of many calls):

* ``raw``: one ``httpx.AsyncClient`` posting the same JSON body and decoding the answer:
  the floor, what any client must pay for the round trip;
* ``gateway``: ``Gateway({...}).complete("bench", messages)`` through ``OpenAIChat``;
* ``litellm``: ``litellm.Router(...).acompletion(model="bench", messages=...)``.

Overhead = a contender's time minus raw's, in the same round (the median over rounds).
Rows: W9 (non-streaming overhead, target <= 150 us and >= 10x less than LiteLLM's),
W9-ttft (time to the first content delta of a stream, overhead over raw httpx reading
the SSE to its first content chunk; target <= 300 us; LiteLLM's for reference),
W9-cache (a whole ``complete(..., cache=True)`` answered by ``MemoryCache``; target
<= 50 us) and W9-run (``ctx.model`` in a run on ``memory://`` minus the same graph
journaling the raw httpx post with ``ctx.step``: what journaling the call costs; for
information).

    python benchmarks/run.py --only W9          # or, alone:
    cd benchmarks && python -m workloads.w9_gateway [--quick]
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import httpx
import msgspec

from mainspring import END, START, Context, Graph, Runtime
from mainspring.models.cache import MemoryCache
from mainspring.models.gateway import Gateway
from mainspring.models.messages import ModelRequest, user
from mainspring.models.protocol import TextDelta
from mainspring.models.providers.openai_chat import OpenAIChat
from mainspring.models.spec import ModelSpec
from mainspring.store import store_from_url

from harness import US, Result, Samples, Settings, Timing, at_least, at_most, interleave
from upstream import UpstreamProcess

KEY = "sk-bench"
MODEL_ID = "bench-model"
PROMPT = "Say hello in one short sentence."
MESSAGES = [{"role": "user", "content": PROMPT}]
ANSWER = "Hello! How can I help you today?"

OVERHEAD_US = 150.0
TTFT_OVERHEAD_US = 300.0
CACHE_HIT_US = 50.0
VS_LITELLM = 10.0

Call = Callable[[], Awaitable[object]]


class RawClient:
    """The floor: one pooled client, the body encoded once, the answer decoded."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url)
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        body = OpenAIChat(base_url=base_url, api_key=KEY).body(
            ModelRequest(MODEL_ID, [user(PROMPT)])
        )
        self.body = msgspec.json.encode(body)
        self.stream_body = msgspec.json.encode({**body, "stream": True})

    async def complete(self) -> str:
        response = await self.client.post("/chat/completions", content=self.body,
                                          headers=self.headers)  # fmt: skip
        data = msgspec.json.decode(await response.aread())
        text: str = data["choices"][0]["message"]["content"]
        return text

    async def first_token(self) -> float:
        """Seconds to the first content chunk of a stream (then the stream is read out)."""
        started = time.perf_counter()
        ttft = 0.0
        async with self.client.stream(
            "POST", "/chat/completions", content=self.stream_body, headers=self.headers
        ) as response:
            buffer = b""
            async for chunk in response.aiter_raw():
                if ttft:
                    continue
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    data = event.removeprefix(b"data: ")
                    if data == b"[DONE]":
                        continue
                    choices = msgspec.json.decode(data).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        ttft = time.perf_counter() - started
                        break
        return ttft

    async def aclose(self) -> None:
        await self.client.aclose()


@contextmanager
def litellm_router(base_url: str) -> Iterator[Any]:
    """LiteLLM's Router over the same upstream (its price map read locally, no network).

    Each Router adds its callbacks to LiteLLM's global lists, and every later call of
    every Router runs them all: the lists are put back as they were when the
    measurement ends. LiteLLM still gets slower in a process that already ran it on
    another event loop (~+1 ms per call), so with ``--repeat`` only the first run's
    anchor is LiteLLM as a fresh process sees it; run W9 in fresh processes to
    collect several (``for i in 1 2 3; do python run.py --only W9 --json; done``).
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    saved = {
        name: list(value)
        for name in dir(litellm)
        if "callback" in name and isinstance(value := getattr(litellm, name), list)
    }
    params = {"model": f"openai/{MODEL_ID}", "api_base": base_url, "api_key": KEY}
    try:
        yield Router(model_list=[{"model_name": "bench", "litellm_params": params}])
    finally:
        for name, value in saved.items():
            getattr(litellm, name)[:] = value


async def litellm_first_token(router: Any) -> float:
    started = time.perf_counter()
    ttft = 0.0
    stream = await router.acompletion(model="bench", messages=MESSAGES, stream=True)
    async for chunk in stream:
        if not ttft and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
    return ttft


async def gateway_first_token(gateway: Gateway) -> float:
    started = time.perf_counter()
    ttft = 0.0
    async for event in gateway.stream("bench", MESSAGES):
        if not ttft and isinstance(event, TextDelta):
            ttft = time.perf_counter() - started
    return ttft


def per_call(fn: Call, calls: int) -> Callable[[], Awaitable[Timing]]:
    async def sample() -> Timing:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await fn()
        return Timing(time.perf_counter() - wall, time.process_time() - cpu) / calls

    return sample


def mean_ttft(fn: Callable[[], Awaitable[float]], calls: int) -> Callable[[], Awaitable[Timing]]:
    async def sample() -> Timing:
        cpu = time.process_time()
        total = 0.0
        for _ in range(calls):
            ttft = await fn()
            assert ttft > 0, "the stream gave no content"
            total += ttft
        return Timing(total / calls, (time.process_time() - cpu) / calls)

    return sample


class _S(TypedDict, total=False):
    answer: str


def _one_node_graph(name: str, body: Callable[[Context], Awaitable[str]]) -> Any:
    g = Graph(_S, name=name)

    @g.node
    async def ask(s: _S, ctx: Context) -> _S:
        return {"answer": await body(ctx)}

    g.edge(START, "ask")
    g.edge("ask", END)
    return g.compile()


def overhead(contender: Samples, floor: Samples, *, cpu: bool = False) -> float:
    """The contender's time minus the floor's in the same round, median over rounds (us);
    ``cpu``: this process's CPU time instead of wall time (the upstream runs elsewhere)."""
    pairs = zip(contender.values, floor.values, strict=True)
    if cpu:
        return statistics.median(c.cpu - f.cpu for c, f in pairs) * US
    return statistics.median(c.wall - f.wall for c, f in pairs) * US


async def run(settings: Settings) -> list[Result]:
    with UpstreamProcess() as base_url:
        raw = RawClient(base_url)
        gateway = Gateway(
            {"bench": ModelSpec(OpenAIChat(base_url=base_url, api_key=KEY), MODEL_ID)},
            cache=MemoryCache(),
        )
        try:
            return await _measure(settings, base_url, raw, gateway)
        finally:
            await raw.aclose()
            await gateway.aclose()


async def _measure(
    settings: Settings, base_url: str, raw: RawClient, gateway: Gateway
) -> list[Result]:
    with litellm_router(base_url) as router:
        # LiteLLM's import leaves a large heap that every gc.collect() of the harness
        # would walk (~0.2 s each): set it aside, for both sides alike, while measuring.
        gc.collect()
        gc.freeze()
        try:
            return await _measure_all(settings, raw, gateway, router)
        finally:
            gc.unfreeze()


async def _measure_all(
    settings: Settings, raw: RawClient, gateway: Gateway, router: Any
) -> list[Result]:
    assert await raw.complete() == ANSWER
    assert (await gateway.complete("bench", MESSAGES)).text == ANSWER
    answer = await router.acompletion(model="bench", messages=MESSAGES)
    assert answer.choices[0].message.content == ANSWER
    calls, reps = settings.pick((50, 7), (200, 21))
    whole = await interleave(
        {
            "raw": per_call(raw.complete, calls),
            "gateway": per_call(lambda: gateway.complete("bench", MESSAGES), calls),
            "litellm": per_call(
                lambda: router.acompletion(model="bench", messages=MESSAGES), calls
            ),
        },
        reps=reps,
        warmup=2,
    )
    stream_calls = settings.pick(30, 150)
    ttft = await interleave(
        {
            "raw": mean_ttft(raw.first_token, stream_calls),
            "gateway": mean_ttft(lambda: gateway_first_token(gateway), stream_calls),
            "litellm": mean_ttft(lambda: litellm_first_token(router), stream_calls),
        },
        reps=reps,
        warmup=2,
    )
    return [
        _non_streaming(whole),
        _streaming(ttft),
        await _cache_hit(settings, gateway),
        await _in_run(settings, raw, gateway),
    ]


def _non_streaming(s: dict[str, Samples]) -> Result:
    ours, theirs = overhead(s["gateway"], s["raw"]), overhead(s["litellm"], s["raw"])
    result = Result(
        "W9",
        ours,
        theirs,
        "us overhead/call",
        extra={
            "raw_us": s["raw"].best * US,
            "gateway_us": s["gateway"].best * US,
            "litellm_us": s["litellm"].best * US,
            "gateway_cpu_overhead_us": overhead(s["gateway"], s["raw"], cpu=True),
            "litellm_cpu_overhead_us": overhead(s["litellm"], s["raw"], cpu=True),
            "spread": max(v.spread for v in s.values()),
            "note": "overhead = time per call minus raw httpx's, same round; anchor = LiteLLM Router",
        },
    )
    result.checks = [
        at_most(ours, OVERHEAD_US, f"<= {OVERHEAD_US:g} us"),
        at_least(result.ratio, VS_LITELLM, f">= {VS_LITELLM:g}x less than LiteLLM"),
    ]
    return result


def _streaming(s: dict[str, Samples]) -> Result:
    ours, theirs = overhead(s["gateway"], s["raw"]), overhead(s["litellm"], s["raw"])
    result = Result(
        "W9-ttft",
        ours,
        theirs,
        "us TTFT overhead",
        extra={
            "raw_ttft_us": s["raw"].best * US,
            "gateway_ttft_us": s["gateway"].best * US,
            "litellm_ttft_us": s["litellm"].best * US,
            "spread": max(v.spread for v in s.values()),
            "note": "time to the first content delta minus raw httpx's; anchor = LiteLLM stream",
        },
    )
    result.checks = [at_most(ours, TTFT_OVERHEAD_US, f"<= {TTFT_OVERHEAD_US:g} us")]
    return result


async def _cache_hit(settings: Settings, gateway: Gateway) -> Result:
    first = await gateway.complete("bench", MESSAGES, cache=True)
    hit = await gateway.complete("bench", MESSAGES, cache=True)
    assert not first.cached and hit.cached and hit.text == ANSWER
    calls = settings.pick(2_000, 10_000)
    samples = await interleave(
        {"hit": per_call(lambda: gateway.complete("bench", MESSAGES, cache=True), calls)},
        reps=settings.pick(5, 15),
    )
    best = samples["hit"].best * US
    result = Result(
        "W9-cache",
        best,
        None,
        "us/hit",
        extra={"median_us": samples["hit"].median * US, "note": "whole call, MemoryCache"},
    )
    result.checks = [at_most(best, CACHE_HIT_US, f"<= {CACHE_HIT_US:g} us")]
    return result


async def _in_run(settings: Settings, raw: RawClient, gateway: Gateway) -> Result:
    async def model(ctx: Context) -> str:
        return (await ctx.model("bench", PROMPT)).text

    async def step(ctx: Context) -> str:
        text: str = await ctx.step("post", raw.complete)
        return text

    by_model, by_step = _one_node_graph("model", model), _one_node_graph("step", step)
    async with Runtime(store_from_url("memory://"), models=gateway) as rt:
        assert await rt.run(by_model, {}) == await rt.run(by_step, {}) == {"answer": ANSWER}
        calls = settings.pick(60, 200)
        s = await interleave(
            {
                "step": per_call(lambda: rt.run(by_step, {}), calls),
                "model": per_call(lambda: rt.run(by_model, {}), calls),
            },
            reps=settings.pick(7, 21),
            warmup=2,
        )
    journaled = overhead(s["model"], s["step"])
    return Result(
        "W9-run",
        s["model"].best * US,
        s["step"].best * US,
        "us/run",
        extra={
            "model_minus_step_us": journaled,
            "note": "one-node run: ctx.model vs ctx.step(raw httpx post), memory:// store",
        },
    )


if __name__ == "__main__":
    import json
    import tempfile
    from pathlib import Path

    import anyio

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        outcome = anyio.run(run, Settings(quick=quick, workdir=Path(tmp), pg_url=""))
    for line in outcome:
        print(json.dumps(line.to_json()))
