"""W18 screening: the injection screen per 2 KB text on one core, p50 and p99, side by side
with its anchor, the heuristics alone (no installable third-party scanner runs without
torch here: llm-guard's scanners pull in transformers).

Texts: 2 KB windows cut from the held-out split of benchmarks/screen_data/ (benign
documentation, tool outputs, injected documents), each made unique so that the screen's
recent-verdict cache never answers. The classifier is loaded before timing (its one-off
load is reported apart). One process, one thread: one core. The numbers are the thread's
CPU time per text (wall time, which counts the time the machine gave other processes,
is reported beside them).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from mainspring.guard.screen import Classifier, Rule, Screener

from harness import Result, Settings, at_most

DATASET = Path(__file__).resolve().parent.parent / "screen_data" / "dataset.jsonl.gz"
SIZE = 2048


def texts(count: int) -> list[str]:
    with gzip.open(DATASET, "rt", encoding="utf-8") as f:
        pool = [r["text"] for r in map(json.loads, f) if r["split"] == "test"]
    out: list[str] = []
    i = 0
    while len(out) < count:
        chunk = ""
        while len(chunk) < SIZE:
            chunk += pool[i % len(pool)] + "\n"
            i += 1
        out.append(f"{len(out)} {chunk}"[:SIZE])
    return out


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _time(screener: Screener, batch: list[str], wall: list[float] | None = None) -> list[float]:
    """CPU time of this thread per text, in ms (and wall time into ``wall``): on a shared
    machine a preempted call's wall time measures the neighbours, its CPU time the screen."""
    out = []
    for text in batch:
        began, began_wall = time.thread_time_ns(), time.perf_counter_ns()
        screener.screen_text(text, "bench")
        out.append((time.thread_time_ns() - began) / 1e6)
        if wall is not None:
            wall.append((time.perf_counter_ns() - began_wall) / 1e6)
    return out


async def run(settings: Settings) -> list[Result]:
    count = settings.pick(300, 3000)
    batch = texts(count)
    began = time.perf_counter()
    classifier = Classifier.load()
    load_ms = (time.perf_counter() - began) * 1e3
    full = Screener({"*": Rule()}, classifier=classifier)
    anchor = Screener({"*": Rule(classifier=False)}, classifier=classifier)
    _time(full, batch[:30])  # warm the regexes and the interpreter's caches
    _time(anchor, batch[:30])
    full_ms: list[float] = []
    anchor_ms: list[float] = []
    wall_ms: list[float] = []
    for start in range(0, count, 50):  # interleaved, so that noise falls on both alike
        part = batch[start : start + 50]
        full_ms += _time(Screener({"*": Rule()}, classifier=classifier), part, wall_ms)
        anchor_ms += _time(Screener({"*": Rule(classifier=False)}, classifier=classifier), part)
    p50, p99 = _percentiles(full_ms)
    a50, a99 = _percentiles(anchor_ms)
    w50, w99 = _percentiles(wall_ms)
    return [
        Result(
            "W18-screen-p99",
            p99,
            a99,
            "ms/2KB",
            checks=[at_most(p99, 2.0, "p99 <= 2 ms per 2 KB text")],
            extra={
                "p50_ms": p50,
                "heuristics_p50_ms": a50,
                "wall_p50_ms": w50,
                "wall_p99_ms": w99,
                "texts": count,
                "load_ms": load_ms,
            },
        ),
        Result("W18-screen-p50", p50, a50, "ms/2KB"),
    ]
