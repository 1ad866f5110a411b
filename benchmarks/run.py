"""Run the benchmark suite: Mainspring and its anchors side by side (see BENCHMARKS.md).

    python benchmarks/run.py [--quick] [--json] [--only W1,W2,...] [--pg-url URL] [--repeat N]

``--only`` takes workload families: W1, W1-gate, W1-off, W2 (W2 and W2n), W2-batch,
W2-audit (the audit chain on against off, on W2, and per effect),
W3, W3-batch, W4 (in memory and on SQLite), W5, W6, W7, W8 (cold start: import,
open, resume, each in fresh subprocesses), W9 (model gateway overhead against raw httpx
and LiteLLM's Router on one local upstream), W9-router (a routing decision on one core,
quiet and with the other core loaded; the semantic cache), W10 (hedging a heavy-tailed
upstream), W11 (the tool layer's overhead per call, limits off and on), W11-mcp (an
MCP server's tool over stdio: the SDK's own client against ``Toolbox.call`` and
``ctx.tool`` on an ``MCPServer``), W11-sandbox (start-up of a sandboxed Python and
shell run: p50, p99), W12 (an agent turn's orchestration against LangGraph's prebuilt
ReAct agent and the OpenAI Agents SDK), W13 (policy evaluation per effect, 50 rules, Python
and Cedar against pycasbin; the whole gate with policy and a budget against none),
W13-tenants (store queries scoped by tenant against the same queries unscoped, on SQLite
and PostgreSQL), W18 (the injection screen per 2 KB text, p50 and p99 on one core,
against the heuristics alone), W11-secrets (a tool call with a declared secret
against W11's), PII (the redactor's cost per effect, in a run and on 2 KB of text),
W14-session (session memory's get and set, p99, in process and on Redis), W14-context
(context assembly of a 200-turn thread into 8k tokens against a naive tiktoken fit and
LangChain's trim_messages), W14-archive (the cold archive against one SQLite table),
W15-api (a run started over HTTP to its first SSE event, against the runtime in process and
``langgraph dev``; FastAPI against bare Starlette under wrk: ``server_api.py``), W16 (scale-out
workers on PostgreSQL: enqueue-to-start, steps/s with 1, 2 and 4 worker processes, takeover after
SIGKILL, against DBOS queues, PgQueuer and Procrastinate: ``workers.py``, the ``bench-workers``
extra).
``--quick`` finishes in under a minute; the default run is longer and more
precise. ``--repeat N`` runs the chosen families N times and prints, per workload, the median and range across
runs as a Markdown table (``summarize.py``); with ``--json``, every run's lines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import context_assembly
import memory_archive
import server_api
import session_memory
import workers
from harness import Result, Settings, Transient
from report import environment, print_json, print_table
from summarize import summarize
from workloads import (
    agent,
    audit,
    coldstart,
    concurrency,
    durable,
    gate,
    guard_data,
    mcp,
    memory,
    orchestration,
    policy,
    postgres,
    router,
    sandbox,
    screening,
    storage,
    tenants,
    tools,
    tracing,
    w9_gateway,
    w10_hedging,
)

Family = Callable[[Settings], Coroutine[Any, Any, list[Result]]]

FAMILIES: dict[str, Family] = {
    "W1": orchestration.run,
    "W1-gate": gate.run,
    "W1-off": orchestration.run_off,
    "W2": durable.run,
    "W2-batch": durable.run_batch,
    "W2-audit": audit.run,
    "W3": postgres.run,
    "W3-batch": postgres.run_batch,
    "W4": concurrency.run,
    "W5": storage.run,
    "W6": memory.run,
    "W7": tracing.run,
    "W8": coldstart.run,
    "W9": w9_gateway.run,
    "W9-router": router.run,
    "W10": w10_hedging.run,
    "W11": tools.run,
    "W11-mcp": mcp.run,
    "W11-sandbox": sandbox.run,
    "W12": agent.run,
    "W13": policy.run,
    "W13-tenants": tenants.run,
    "W18": screening.run,
    "W11-secrets": guard_data.run_secrets,
    "PII": guard_data.run_pii,
    "W14-session": session_memory.run,
    "W14-context": context_assembly.measure,
    "W14-archive": memory_archive.run,
    "W15-api": server_api.run,
    "W16": workers.run,
}

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
RETRY_AFTER_S = 5  # a shared server that restarted under a workload is usually back by then


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions; the suite takes < 1 minute"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per workload on stdout"
    )
    parser.add_argument(
        "--only", type=_families, default=list(FAMILIES), help="comma-separated families"
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        metavar="N",
        help="run the families N times; without --json, print the summary across runs",
    )
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL for W3 (default %(default)s)"
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _families(text: str) -> list[str]:
    by_key = {name.lower(): name for name in FAMILIES}
    chosen = [
        by_key.get(token.strip().lower(), token.strip())
        for token in text.split(",")
        if token.strip()
    ]
    unknown = [name for name in chosen if name not in FAMILIES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {unknown[0]!r}; choose from {', '.join(FAMILIES)}"
        )
    return chosen


def run_suite(settings: Settings, names: list[str], *, as_json: bool) -> tuple[list[Result], bool]:
    """Run the chosen families in order, each on a fresh event loop.

    A family that breaks is reported as failed and the rest go on; its own event
    loop keeps whatever it left behind (tasks, cancel scopes) away from the next.
    """
    results: list[Result] = []
    ok = True
    for name in names:
        started = time.perf_counter()
        _progress(f"{name} ...", as_json)
        try:
            produced = run_family(name, settings)
        except (Exception, asyncio.CancelledError) as exc:
            # One broken workload must not hide the others' numbers.
            traceback.print_exc(file=sys.stderr)
            cause = root_cause(exc)
            produced = [
                Result(name, None, None, "-", skipped=f"failed: {type(cause).__name__}: {cause}")
            ]
            ok = False
        _progress(f"{name} done in {time.perf_counter() - started:.1f} s", as_json)
        for result in produced:
            if as_json:
                print_json(result)
        results.extend(produced)
    return results, ok


def run_family(name: str, settings: Settings) -> list[Result]:
    """One family on a fresh event loop, measured again (once) if the environment failed under it."""
    try:
        return asyncio.run(FAMILIES[name](settings))
    except Transient as exc:
        print(
            f"{name}: {exc}; measuring it again in {RETRY_AFTER_S} s", file=sys.stderr, flush=True
        )
        time.sleep(RETRY_AFTER_S)
        return asyncio.run(FAMILIES[name](settings))


def root_cause(exc: BaseException) -> BaseException:
    """The first error in the chain: a cancellation is usually the echo of an earlier failure."""
    while isinstance(exc, asyncio.CancelledError) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


def _progress(message: str, as_json: bool) -> None:
    if not as_json:
        print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    runs: list[list[Result]] = []
    ok = True
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp:
            settings = Settings(quick=args.quick, workdir=Path(tmp), pg_url=args.pg_url)
            results, run_ok = run_suite(settings, args.only, as_json=args.json)
        runs.append(results)
        ok = ok and run_ok
    if not args.json:
        mode = "quick" if args.quick else "full"
        elapsed = time.perf_counter() - started
        if args.repeat == 1:
            print_table(
                runs[0],
                title=f"Mainspring benchmarks ({mode}, {elapsed:.0f} s)",
                context=environment(),
            )
        else:
            lines = [r.to_json() for results in runs for r in results]
            conditions = f"{args.repeat} {mode} runs in {elapsed:.0f} s; {environment()}."
            print(summarize(lines, conditions))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
