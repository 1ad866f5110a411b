"""W16: scale-out workers on PostgreSQL against DBOS queues, PgQueuer and Procrastinate.

    PYTHONPATH=.:benchmarks python benchmarks/workers.py [--quick] [--json] [--only dbos,mainspring]

Each system runs on a fresh database of its own on ``--pg-url``'s server (``bench_w16_<name>``,
made and dropped here; Mainspring: the schema ``bench_w16_mainspring``), with worker processes
of its own (``workers_jobs.py``; Mainspring: ``mainspring worker``), each allowed
``--concurrency`` jobs at once. This process enqueues and listens on a UDP probe the jobs report
to (start, steps, end: ``workers_probe.py``). The systems are measured one after the other:

* ``W16-start-p50`` / ``W16-start-p99``: enqueue-to-start with one idle worker: one job at a
  time, its input stamped just before the enqueue call; the job reports ``start - enqueued``
  as its body begins. DBOS polls its queue (``polling_interval_sec``, 1 s by default): measured
  at the default and at 10 ms; the anchor is the fastest anchor at its best setting.
* ``W16-steps-1w`` / ``-2w`` / ``-4w``: durable steps per second with 1, 2 and 4 worker
  processes draining a backlog: the workers are frozen (SIGSTOP) while N jobs are enqueued
  (batch inserts where the client has them), then released (SIGCONT); timed from the release
  to the last job's end (the enqueue time is reported apart, ``*enqueue_s``). A DBOS or
  Mainspring job is 10 durable steps (10 ``@DBOS.step`` calls; 10 graph nodes); PgQueuer and
  Procrastinate have no steps inside a job, so one job is one step: their jobs/s are reported
  beside, not as the anchor.
* ``W16-takeover``: a job of 10 steps of 0.2 s runs on one of 4 workers; at its 4th step that
  worker gets SIGKILL; the takeover is the time from the kill to the first sign of the job in
  another process. Mainspring: the lease (``--lease-ttl``, 2 s here) expires and another worker
  claims the run. DBOS (without Conductor) has no failure detector: its documented ways are a
  restart with the same executor id (it recovers its own pending workflows at launch: the
  anchor, restarted at once as a supervisor would) or a supervisor that noticed the death
  resuming the workflows (``DBOSClient.list_workflows(status="PENDING", executor_id=...)`` +
  ``resume_workflows``; done at once here, ``dbos_resume_at_once_s``: detection would come on
  top). PgQueuer re-picks a job whose heartbeat is older than ``heartbeat_timeout`` (set to the
  lease TTL) on its next dequeue (``dequeue_timeout`` set to the same; at its 30 s default the
  takeover took 30 s). Procrastinate leaves a stalled job until a periodic task of the
  application retries it (not measured).

Without ``--quick`` every system is measured twice, in turned orders (A B C D, D C B A), and
each number is its best of the two (noise on a shared machine only makes numbers worse).
Ratios: > 1 means Mainspring is better. The systems are not interleaved sample by sample (each
has its own workers), so a ratio is of two values measured minutes apart on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness import Result, Settings, at_most
from report import print_json, print_table
from workers_probe import Probe
from workers_systems import LOGS, Dbos, Job, Mainspring, PgQueuer, Procrastinate, System

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SYSTEMS = ("mainspring", "dbos", "pgqueuer", "procrastinate")
WORKER_COUNTS = (1, 2, 4)
DBOS_TUNED_POLL = 0.01
TAKEOVER_STEP_S = 0.2
MS = 1e3


@dataclass
class Plan:
    quick: bool
    concurrency: int
    lease_ttl: float

    @property
    def latency_samples(self) -> int:
        return 15 if self.quick else 150

    @property
    def slow_latency_samples(self) -> int:  # DBOS at its 1 s default: ~0.5 s a sample
        return 6 if self.quick else 30

    @property
    def steps_per_round(self) -> int:
        return 400 if self.quick else 3000

    @property
    def rounds(self) -> int:
        return 1 if self.quick else 2

    @property
    def passes(self) -> int:  # every system measured this many times, in turned orders
        return 1 if self.quick else 2


@dataclass
class Found:
    """One system's numbers."""

    name: str
    step_unit: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    samples: int = 0
    rate: dict[int, float] = field(default_factory=dict)  # steps/s by worker count
    enqueue_s: dict[int, float] = field(default_factory=dict)
    takeover_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- the measurements, through the adapter -----------------------------------------------


async def run_jobs(
    system: System, jobs: list[Job], timeout: float = 300, backlog: bool = False
) -> tuple[float, float]:
    """Enqueue ``jobs`` and wait for their ends: (enqueue seconds, seconds to the last end).

    With ``backlog``, the workers are frozen (SIGSTOP) while the jobs are enqueued and the time
    runs from their release (SIGCONT): how fast they drain a queue, the client's enqueue speed
    apart (it is reported on its own).
    """
    if backlog:
        system.signal_all(signal.SIGSTOP)
    t0 = time.time()
    try:
        await system.enqueue(jobs)
    finally:
        enqueued = time.time() - t0
        if backlog:
            t0 = time.time()
            system.signal_all(signal.SIGCONT)
    ids = [j.id for j in jobs]
    await system.probe.wait_done(ids, timeout, system.check_alive)
    last = max(e.at for i in ids for e in system.probe.events[i] if e.kind == "done")
    return enqueued, last - t0


async def latencies(system: System, samples: int, tag: str) -> list[float]:
    """Enqueue-to-start, one job at a time into idle workers (seconds)."""
    found = []
    for i in range(samples):
        job = Job(f"{system.name}-{tag}-{i}")
        await system.enqueue([job])
        start = await system.probe.wait_event(job.id, "start", timeout=30)
        found.append(float(start.extra))
        await system.probe.wait_done([job.id], timeout=30)
        await asyncio.sleep(random.uniform(0.01, 0.03))  # idle again, at no fixed phase
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def throughput(system: System, plan: Plan, workers: int) -> tuple[float, float]:
    """Best steps/s over the rounds, and that round's enqueue seconds."""
    jobs_n = max(1, plan.steps_per_round // system.steps)
    best = (0.0, 0.0)
    for r in range(plan.rounds):
        jobs = [Job(f"{system.name}-t{workers}-{r}-{i}") for i in range(jobs_n)]
        enqueued, wall = await run_jobs(system, jobs, backlog=True)
        rate = jobs_n * system.steps / wall
        if rate > best[0]:
            best = (rate, enqueued)
    return best


async def warm(system: System, tag: str) -> None:
    jobs = [Job(f"{system.name}-warm-{tag}-{i}") for i in range(2 * len(system.procs))]
    await run_jobs(system, jobs, 60)


async def takeover(system: System, tag: str, restart: bool = False) -> dict[str, Any]:
    """SIGKILL the worker running a traced job at its 4th step; time until another takes it."""
    steps = system.steps
    job = Job(f"{system.name}-take-{tag}", trace=True, sleep=TAKEOVER_STEP_S if steps > 1 else 1.0)
    kill_at = str(min(3, steps - 1))
    await system.enqueue([job])
    await system.probe.until(  # the job's step ``kill_at`` has begun somewhere
        lambda: any(e.kind == "step" and e.extra == kill_at for e in system.probe.events[job.id]),
        30,
        "the step to kill at",
    )
    victim_pid = next(e.pid for e in system.probe.events[job.id] if e.extra == kill_at)
    victim = next(p for p in system.procs if p.pid == victim_pid)
    killed_at = time.time()
    victim.kill()
    system.procs.remove(victim)
    if isinstance(system, Dbos):
        if restart:  # what a process supervisor does: the same executor id, relaunched
            await system.spawn(1, label=victim.label)
        else:  # a supervisor that saw the death at once resumes its workflows
            await system.resume_dead(victim.label)
    other = await system.probe.wait_other(job.id, victim_pid, killed_at, timeout=120)
    await system.probe.wait_done([job.id], timeout=120)
    after = [e for e in system.probe.events[job.id] if e.pid != victim_pid and e.kind == "step"]
    return {
        "takeover_s": other.at - killed_at,
        "resumed_at_step": int(after[0].extra) if after else None,
        "killed_at_step": int(kill_at),
    }


async def measure_system(system: System, plan: Plan) -> Found:
    found = Found(system.name)
    system.probe.reset()
    try:
        await system.setup()
        found.step_unit = system.step_unit
        await system.spawn(1)
        await warm(system, "1")
        await _latency(system, plan, found)
        for n in WORKER_COUNTS:
            if len(system.procs) < n:
                await system.spawn(n - len(system.procs))
                await warm(system, str(n))
            found.rate[n], found.enqueue_s[n] = await throughput(system, plan, n)
        if not isinstance(system, Procrastinate):
            await _takeovers(system, found)
    except Exception as exc:  # the numbers found so far stand
        found.error = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        await system.teardown()
    return found


async def _takeovers(system: System, found: Found) -> None:
    try:
        result = await takeover(system, "a")
        found.takeover_s = result.pop("takeover_s")
        found.extra |= result
        if isinstance(system, Dbos):  # the anchor: a restart (no detector needed beyond it)
            restart = await takeover(system, "b", restart=True)
            found.extra["resume_takeover_s"] = found.takeover_s
            found.takeover_s = restart["takeover_s"]
    except Exception as exc:
        found.extra["takeover_failed"] = f"{type(exc).__name__}: {exc}"[:300]


async def _latency(system: System, plan: Plan, found: Found) -> None:
    if isinstance(system, Dbos):  # its default first, then a fresh worker polling every 10 ms
        slow = await latencies(system, plan.slow_latency_samples, "lat-default")
        found.extra |= {
            "default_poll_p50_ms": pct(slow, 0.5) * MS,
            "default_poll_p99_ms": pct(slow, 0.99) * MS,
        }
        # A new interval applies at once when longer, but a shorter one is approached by 10 %
        # a poll (about 10 s from 1 s to 10 ms): a new process starts at the new interval.
        system.stop_all()
        await system.set_poll(DBOS_TUNED_POLL)  # in the queue's row before the process reads it
        await system.spawn(1)
        await warm(system, "tuned")
    values = await latencies(system, plan.latency_samples, "lat")
    found.p50_ms, found.p99_ms = pct(values, 0.5) * MS, pct(values, 0.99) * MS
    found.samples = len(values)


def make_system(name: str, url: str, probe: Probe, plan: Plan) -> System:
    c = plan.concurrency
    if name == "dbos":
        return Dbos("dbos", url, probe, c)
    if name == "pgqueuer":
        return PgQueuer("pgqueuer", url, probe, c, heartbeat=plan.lease_ttl)
    if name == "procrastinate":
        return Procrastinate("procrastinate", url, probe, c)
    return Mainspring("mainspring", url, probe, c, lease_ttl=plan.lease_ttl)


async def measure(url: str, plan: Plan, names: list[str]) -> dict[str, Found]:
    probe = await Probe().open()
    out: dict[str, Found] = {}
    try:
        for turn in range(plan.passes):  # A B C D, then D C B A: no system always first
            for name in names if turn % 2 == 0 else names[::-1]:
                found = await measure_once(name, url, probe, plan)
                out[name] = best_of(out[name], found) if name in out else found
    finally:
        probe.close()
    return out


async def measure_once(name: str, url: str, probe: Probe, plan: Plan) -> Found:
    for attempt in range(2):  # a shared server restarted under it: the system once more
        try:
            found = await measure_system(make_system(name, url, probe, plan), plan)
        except Exception as exc:  # one system failing keeps the others
            found = Found(name, error=f"{type(exc).__name__}: {exc}"[:400])
        if found.error is None or attempt:
            break
        await asyncio.sleep(5)
    return found


def best_of(a: Found, b: Found) -> Found:
    """Each number's best over two passes (noise on a shared machine only makes them worse)."""
    if not b.samples:
        return a
    if not a.samples:
        return b

    def low(x: float | None, y: float | None) -> float | None:
        return min((v for v in (x, y) if v is not None), default=None)

    out = Found(a.name, a.step_unit, samples=a.samples + b.samples, extra=a.extra | b.extra)
    out.p50_ms, out.p99_ms = low(a.p50_ms, b.p50_ms), low(a.p99_ms, b.p99_ms)
    for n in WORKER_COUNTS:
        if n in a.rate or n in b.rate:
            best = a if a.rate.get(n, 0) >= b.rate.get(n, 0) else b
            out.rate[n], out.enqueue_s[n] = best.rate[n], best.enqueue_s[n]
    out.takeover_s = low(a.takeover_s, b.takeover_s)
    for key in ("default_poll_p50_ms", "default_poll_p99_ms", "resume_takeover_s"):
        out.extra[key] = low(a.extra.get(key), b.extra.get(key))
    out.error = b.error or a.error
    return out


# -- rows ----------------------------------------------------------------------------------


ANCHORS = ("dbos", "pgqueuer", "procrastinate")


def rows(found: dict[str, Found], plan: Plan) -> list[Result]:
    ms = found.get("mainspring")
    ms_ok = ms if ms is not None and ms.samples else None  # it got as far as starting jobs
    anchors = {n: f for n, f in found.items() if n in ANCHORS and f.samples}
    common: dict[str, Any] = {
        f"{n}_failed": f.error for n, f in found.items() if f.error is not None
    }
    common |= {
        f"{n}_takeover_failed": f.extra["takeover_failed"]
        for n, f in found.items()
        if "takeover_failed" in f.extra
    }
    out = [_latency_row(ms_ok, anchors, common, q) for q in ("p50", "p99")]
    for n in WORKER_COUNTS:
        out.append(_rate_row(ms_ok, anchors, common, n))
    out.append(_takeover_row(ms_ok, anchors, common, plan))
    return out


def _latency_row(
    ms: Found | None, anchors: dict[str, Found], common: dict[str, Any], q: str
) -> Result:
    def value(f: Found) -> float | None:
        return f.p50_ms if q == "p50" else f.p99_ms

    extra = dict(common)
    for name, f in anchors.items():
        extra[f"{name}_{q}_ms"] = value(f)
        if name == "dbos":
            extra[f"dbos_{q}_ms_default_poll"] = f.extra.get(f"default_poll_{q}_ms")
    best = min(anchors.values(), key=lambda f: value(f) or float("inf"), default=None)
    anchor = value(best) if best is not None else None
    if best is not None:
        poll = f" (polling every {DBOS_TUNED_POLL * MS:.0f} ms)" if best.name == "dbos" else ""
        extra["anchor_is"] = best.name + poll
    if ms is not None:
        extra["samples"] = ms.samples
    result = Result(f"W16-start-{q}", value(ms) if ms else None, anchor, f"ms {q}", extra=extra)
    if q == "p99" and ms is not None and ms.p99_ms is not None:
        result.checks = [at_most(ms.p99_ms, 10.0, "p99 <= 10 ms")]
    return result


def _rate_row(
    ms: Found | None, anchors: dict[str, Found], common: dict[str, Any], workers: int
) -> Result:
    extra = dict(common)
    for name, f in anchors.items():
        key = "steps_s" if f.step_unit == "durable steps" else "jobs_s"
        extra[f"{name}_{key}"] = f.rate.get(workers)
        extra[f"{name}_enqueue_s"] = f.enqueue_s.get(workers)
    if ms is not None:
        extra["enqueue_s"] = ms.enqueue_s.get(workers)
    dbos = anchors.get("dbos")
    return Result(
        f"W16-steps-{workers}w",
        ms.rate.get(workers) if ms else None,
        dbos.rate.get(workers) if dbos else None,
        "steps/s",
        higher_is_better=True,
        extra=extra,
    )


def _takeover_row(
    ms: Found | None, anchors: dict[str, Found], common: dict[str, Any], plan: Plan
) -> Result:
    extra = dict(common) | {"lease_ttl_s": plan.lease_ttl}
    dbos = anchors.get("dbos")
    if dbos is not None:
        extra["anchor_is"] = "DBOS: the dead process restarted at once, same executor id"
        extra["dbos_resume_at_once_s"] = dbos.extra.get("resume_takeover_s")
        extra["dbos_resumed_at_step"] = dbos.extra.get("resumed_at_step")
    if (pgq := anchors.get("pgqueuer")) is not None:
        extra["pgqueuer_s"] = pgq.takeover_s
    if ms is not None:
        extra["resumed_at_step"] = ms.extra.get("resumed_at_step")
    result = Result(
        "W16-takeover",
        ms.takeover_s if ms else None,
        dbos.takeover_s if dbos else None,
        "s",
        extra=extra,
    )
    if ms is not None and ms.takeover_s is not None:
        limit = plan.lease_ttl + 1
        result.checks = [at_most(ms.takeover_s, limit, f"<= lease TTL + 1 s ({limit:g} s)")]
    return result


def context(plan: Plan) -> str:
    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"Python {platform.python_version()}, mainspring {v('mainspring')}, dbos {v('dbos')}, "
        f"pgqueuer {v('pgqueuer')}, procrastinate {v('procrastinate')}; {os.cpu_count()} cores, "
        f"load {load}; {plan.concurrency} jobs at once per worker"
    )


async def run(settings: Settings) -> list[Result]:
    """The ``run.py`` family (``--only W16``)."""
    plan = Plan(settings.quick, concurrency=8, lease_ttl=2.0)
    return rows(await measure(settings.pg_url, plan, list(SYSTEMS)), plan)


# -- worker processes (``--worker KIND``) ---------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    import workers_jobs

    if args.worker == "dbos":
        workers_jobs.dbos_worker(args.url, args.concurrency, args.poll, args.label)
    elif args.worker == "pgqueuer":
        asyncio.run(workers_jobs.pgqueuer_worker(args.url, args.concurrency, args.heartbeat))
    elif args.worker == "procrastinate":
        asyncio.run(workers_jobs.procrastinate_worker(args.url, args.concurrency))
    else:
        raise SystemExit(f"--worker {args.worker!r}: one of dbos, pgqueuer, procrastinate")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument("--json", action="store_true", help="one JSON object per workload")
    parser.add_argument("--pg-url", default=os.environ.get("MAINSPRING_BENCH_PG", PG_URL))
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker")
    parser.add_argument("--lease-ttl", type=float, default=2.0, help="Mainspring's lease TTL")
    for hidden in ("--worker", "--url", "--label"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := set(names) - set(SYSTEMS):
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    plan = Plan(args.quick, args.concurrency, args.lease_ttl)
    found = asyncio.run(measure(args.pg_url, plan, names))
    results = rows(found, plan)
    if args.json:
        for result in results:
            print_json(result)
    else:
        print_table(results, title="W16: workers on PostgreSQL", context=context(plan))
        for f in found.values():
            if f.error:
                print(f"{f.name}: {f.error} (its workers' output: {LOGS})")
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
