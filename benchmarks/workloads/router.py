"""M-router: what a routing decision costs on one core, and what the semantic cache adds.

Measured in a child process pinned to one core (the target is per core), with the
local embedding model (``mainspring[embeddings]``) on one ONNX Runtime thread:

* ``M-router``: ``CentroidRouter.route`` on short texts, embedding included (three
  labels trained from four examples each); p50 and p99 over the decisions, target
  p99 <= 5 ms. ``RuleRouter.route`` over five rules is reported beside it.
* ``M-semcache``: ``SemanticCache.lookup`` with 1,000 entries stored: a hit on the
  exact normalised text (no embedding) and a semantic hit (embedding + guards).

Alone: ``cd benchmarks && python -m workloads.router``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import Result, Settings, at_most, skipped

EXAMPLES = {
    "code": [
        "Write a Python function that parses a CSV file",
        "Why does my JavaScript loop never end?",
        "Fix this SQL query that returns duplicate rows",
        "How do I reverse a linked list in Java?",
    ],
    "math": [
        "What is the integral of x squared?",
        "Solve 3x + 5 = 20 for x",
        "What is the derivative of sin(x)?",
        "Compute the probability of two heads in three coin flips",
    ],
    "support": [
        "I was charged twice for my subscription",
        "How do I reset my password?",
        "Where is my order? It has not arrived",
        "Cancel my account please",
    ],
}
QUERIES = [
    "Implement binary search in C++ number {i}",
    "Find the roots of x^2 - {i}x + 3",
    "I can't log in to my account since order {i}",
    "What is the sum of the first {i} integers?",
]


async def _percentiles(fn: Callable[[int], Awaitable[object]], n: int) -> dict[str, float]:
    for i in range(20):
        await fn(i)
    wall, cpu = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.process_time()
        await fn(i)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    wall.sort()
    return {
        "p50_ms": wall[n // 2] * 1e3,
        "p99_ms": wall[min(n - 1, int(n * 0.99))] * 1e3,
        "cpu_p50_ms": statistics.median(cpu) * 1e3,
    }


async def _child(n: int) -> dict[str, Any]:
    from mainspring.models.classify import CentroidRouter, Rule, RuleRouter
    from mainspring.models.embeddings_local import LocalEmbeddings
    from mainspring.models.semantic_cache import SemanticCache

    embedder = LocalEmbeddings(threads=1)
    embedder.load()
    centroid = await CentroidRouter.train(embedder, EXAMPLES)
    rules = RuleRouter(
        [
            Rule("reasoning", pattern=r"\bprove\b|\bstep by step\b"),
            Rule("code", keywords=["python", "c++", "rust", "sql", "stack trace"]),
            Rule("math", pattern=r"\d+\s*[-+*/^]\s*\d+|\bintegral\b|\bderivative\b"),
            Rule("support", keywords=["refund", "password", "log in", "invoice"]),
            Rule("long", predicate=lambda text: len(text) > 2000),
        ],
        default="small",
    )
    cache: SemanticCache[int] = SemanticCache(embedder)
    for i in range(1000):
        await cache.store(f"question {i} about the order status of parcel {i}", i)
    await cache.store("What is your refund policy?", -1)

    first = await cache.lookup("Tell me about your refund policy")
    assert first is not None and first[0] == -1, f"the semantic lookup must hit, got {first}"

    async def semantic_hit(cache: SemanticCache[int]) -> object:
        cache._recent.clear()  # the lookup embeds its text, as a new request would
        return await cache.lookup("Tell me about your refund policy")

    def query(i: int) -> str:
        return QUERIES[i % len(QUERIES)].format(i=i)

    return {
        "cpus": sorted(os.sched_getaffinity(0)),
        "centroid": await _percentiles(lambda i: centroid.route(query(i)), n),
        "rules": await _percentiles(lambda i: rules.route(query(i)), n),
        "cache_exact": await _percentiles(lambda i: cache.lookup("what is your REFUND policy"), n),
        "cache_semantic": await _percentiles(lambda i: semantic_hit(cache), n),
    }


async def run(settings: Settings) -> list[Result]:
    n = settings.pick(300, 2000)
    here = Path(__file__).resolve().parent.parent
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.router", "--child", str(n)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [skipped("M-router", "ms p99", reason), skipped("M-semcache", "us p50", reason)]
    got = json.loads(proc.stdout)
    centroid, rules = got["centroid"], got["rules"]
    router = Result(
        "M-router",
        centroid["p99_ms"],
        None,
        "ms p99",
        extra={
            "p50_ms": centroid["p50_ms"],
            "cpu_p50_ms": centroid["cpu_p50_ms"],
            "rules_p50_us": rules["p50_ms"] * 1e3,
            "rules_p99_us": rules["p99_ms"] * 1e3,
            "cores": len(got["cpus"]),
        },
    )
    router.checks = [at_most(centroid["p99_ms"], 5.0, "centroid p99 <= 5 ms on one core")]
    exact, semantic = got["cache_exact"], got["cache_semantic"]
    cache = Result(
        "M-semcache",
        exact["p50_ms"] * 1e3,
        None,
        "us p50",
        extra={
            "exact_p99_us": exact["p99_ms"] * 1e3,
            "semantic_p50_ms": semantic["p50_ms"],
            "semantic_p99_ms": semantic["p99_ms"],
        },
    )
    return [router, cache]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(asyncio.run(_child(int(sys.argv[2])))))
    else:
        results = asyncio.run(run(Settings(quick=False, workdir=Path("."), pg_url="")))
        for result in results:
            print(json.dumps(result.to_json()))
