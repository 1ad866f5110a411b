"""W7: what tracing from the journal adds to W1 (see BENCHMARKS.md). Runs on its own:

    python benchmarks/w7_tracing.py [--quick] [--json]

W1 is a 10-node linear graph of trivial sync nodes, ``await rt.run(app, input)``
on ``memory://``. The anchor is W1 without tracing (no listeners: nothing
runs), measured in the same process, interleaved with the traced samples.
Traced samples include the telemetry thread's work: each ends only when every
span of its runs has been built and handed to the exporter, so the GIL time
the thread takes from the runs is counted. Target: <= 15 us added per step.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mainspring import END, START, Graph, Runtime
from mainspring.store import MemoryStore
from mainspring.telemetry.metrics.prometheus import JournalMetrics
from mainspring.telemetry.reader import StoreReader
from mainspring.telemetry.tracing.tracer import JournalTracer

NODES = 10
TARGET_US = 15.0


class S(TypedDict):
    n: int


def w1_graph() -> Any:
    g = Graph(S, name="w1")
    previous = START
    for i in range(NODES):
        g.node(f"n{i}", lambda s: {"n": s["n"] + 1})
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile()


Sampler = Callable[[], Awaitable[float]]


def sampler(
    app: Any, runs: int, listener: JournalTracer | JournalMetrics | None, *, drain: bool = True
) -> Sampler:
    """A sample: ``runs`` runs of W1 (and, traced, the draining of their telemetry); us per step."""

    async def sample() -> float:
        store = MemoryStore()
        if listener is not None:
            listener.reader = StoreReader(store)
        async with Runtime(store, listeners=[listener] if listener is not None else []) as rt:
            started = time.perf_counter()
            for _ in range(runs):
                await rt.run(app, {"n": 0})
            if listener is not None and drain:
                listener.flush(60)
            elapsed = time.perf_counter() - started
        if isinstance(listener, JournalTracer):
            listener.flush(60)
            exporter = listener.exporter
            assert isinstance(exporter, InMemorySpanExporter)
            spans = len(exporter.get_finished_spans())
            assert spans == runs * (NODES + 1), f"expected {runs * (NODES + 1)} spans, got {spans}"
            exporter.clear()
        return elapsed / (runs * NODES) * 1e6

    return sample


async def interleaved(samplers: dict[str, Sampler], rounds: int, warmup: int) -> dict[str, float]:
    """Median of each sampler over ``rounds``, in rotating order, gc.collect() before each sample."""
    names = list(samplers)
    for _ in range(warmup):
        for name in names:
            await samplers[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            values[name].append(await samplers[name]())
    return {name: statistics.median(v) for name, v in values.items()}


async def measure(quick: bool) -> dict[str, Any]:
    app = w1_graph()
    runs = 200 if quick else 1000
    rounds = 5 if quick else 15
    tracer = JournalTracer(InMemorySpanExporter())
    metrics = JournalMetrics()
    medians = await interleaved(
        {
            "off": sampler(app, runs, None),
            "tracing": sampler(app, runs, tracer),
            "tracing_hot_path": sampler(app, runs, tracer, drain=False),
            "metrics": sampler(app, runs, metrics),
        },
        rounds=rounds,
        warmup=1,
    )
    tracer.shutdown()
    metrics.close()
    added = medians["tracing"] - medians["off"]
    return {
        "workload": "W7 tracing on, W1 per step",
        "mainspring": round(medians["tracing"], 2),
        "anchor": round(medians["off"], 2),
        "unit": "us/step",
        "ratio": round(medians["off"] / medians["tracing"], 3),
        "added_us_per_step": round(added, 2),
        "target": f"<= {TARGET_US:g} us added per step",
        "ok": added <= TARGET_US,
        "hot_path_only_added_us": round(medians["tracing_hot_path"] - medians["off"], 2),
        "metrics_added_us": round(medians["metrics"] - medians["off"], 2),
        "runs_per_sample": runs,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and rounds (well under a minute)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.quick))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'workload':<28} {'tracing on':>12} {'off (W1)':>10} {'added':>9}  target")
        print(
            f"{result['workload'][:28]:<28} {result['mainspring']:>9.2f} us {result['anchor']:>7.2f} us "
            f"{result['added_us_per_step']:>6.2f} us  {result['target']}: {'ok' if result['ok'] else 'MISSED'}"
        )
        print(
            f"  hot path alone (listener appends, spans built later): +{result['hot_path_only_added_us']:.2f} us/step"
        )
        print(f"  metrics listener instead of tracing: +{result['metrics_added_us']:.2f} us/step")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
