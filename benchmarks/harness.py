"""Shared pieces of the benchmark suite: settings, results, targets and timing.

Every number a workload reports is measured in the same process run: the
Mainspring side, its anchor and any physical floor are sampled in interleaved
repetitions (A B C, B C A, C A B, ...) with ``gc.collect()`` before each
sample, after warm-up rounds. A contender's value is its best sample (the
lowest time): on a shared machine noise only ever adds time, so the best of N
estimates what the code costs on a quiet one. Ratios between contenders are
the median of the per-round ratios (see :func:`paired`): noise comes and goes,
and samples of one round see the same noise. ``spread`` says how noisy it was.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """What the whole suite runs with; ``quick`` trades precision for a sub-minute suite."""

    quick: bool
    workdir: Path
    pg_url: str

    def pick(self, quick: T, full: T) -> T:
        return quick if self.quick else full


@dataclass(frozen=True, slots=True)
class Check:
    """One part of a workload's target, e.g. ``<= 10 us/step``, and whether it was met."""

    label: str
    ok: bool


def at_most(value: float | None, limit: float, label: str) -> Check:
    return Check(label, value is not None and value <= limit)


def at_least(value: float | None, limit: float, label: str) -> Check:
    return Check(label, value is not None and value >= limit)


@dataclass(slots=True)
class Result:
    """One workload's outcome.

    ``ratio`` is Mainspring's advantage over the anchor: how many times faster,
    smaller or higher-throughput it is (> 1 means Mainspring is better). When
    both sides were sampled in the same rounds it is ``paired_ratio``, the
    median of the per-round ratios; otherwise the ratio of the two values.
    """

    workload: str
    mainspring: float | None
    anchor: float | None
    unit: str
    higher_is_better: bool = False
    paired_ratio: float | None = None
    checks: list[Check] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        ms, anchor = self.mainspring, self.anchor
        if ms is None or anchor is None or ms <= 0 or anchor <= 0:
            return None
        return ms / anchor if self.higher_is_better else anchor / ms

    @property
    def target(self) -> str:
        return "; ".join(c.label for c in self.checks) or "-"

    @property
    def met(self) -> bool | None:
        if self.skipped is not None or not self.checks:
            return None
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": self.workload,
            "mainspring": _round(self.mainspring),
            "anchor": _round(self.anchor),
            "unit": self.unit,
            "ratio": _round(self.ratio),
            "target": self.target,
            "met": self.met,
        }
        if self.checks:
            out["checks"] = {c.label: c.ok for c in self.checks}
        out.update({k: _round(v) if isinstance(v, float) else v for k, v in self.extra.items()})
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


class Transient(Exception):
    """The environment failed under a workload (a shared server restarted): measure it again."""


def skipped(workload: str, unit: str, reason: str) -> Result:
    return Result(workload, None, None, unit, skipped=reason)


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return float(f"{value:.4g}")


# --- timing -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock seconds and this process's CPU seconds (all threads) over the same span.

    CPU time is the steadier of the two on a busy machine (it does not count
    time spent waiting for a core), so CPU-bound workloads report it alongside.
    """

    wall: float
    cpu: float

    def __truediv__(self, n: float) -> Timing:
        return Timing(self.wall / n, self.cpu / n)


#: One sample: run something, return how long it took (per unit of work).
Sampler = Callable[[], Awaitable[Timing]]


@dataclass(frozen=True, slots=True)
class Samples:
    """The kept (post-warm-up) samples of one contender."""

    values: tuple[Timing, ...]

    @property
    def best(self) -> float:
        """The lowest wall time."""
        return min(t.wall for t in self.values)

    @property
    def best_cpu(self) -> float:
        return min(t.cpu for t in self.values)

    @property
    def median(self) -> float:
        return statistics.median(t.wall for t in self.values)

    @property
    def spread(self) -> float:
        """Relative spread of the wall times, (max - min) / median: how noisy the machine was."""
        walls = [t.wall for t in self.values]
        med = statistics.median(walls)
        return (max(walls) - min(walls)) / med if med else 0.0


def paired(numerator: Samples, denominator: Samples) -> float:
    """The median over rounds of numerator / denominator (wall times).

    Samples of one round are taken back to back, so they share the machine's
    conditions of the moment; the median of these ratios is the comparison
    least disturbed by noise that comes and goes.
    """
    pairs = zip(numerator.values, denominator.values, strict=True)
    return statistics.median(n.wall / d.wall for n, d in pairs)


async def interleave(
    samplers: Mapping[str, Sampler], *, reps: int, warmup: int = 1
) -> dict[str, Samples]:
    """Sample every contender ``warmup + reps`` times, rotating their order each round."""
    names = list(samplers)
    kept: dict[str, list[Timing]] = {name: [] for name in names}
    for round_ in range(warmup + reps):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            value = await samplers[name]()
            if round_ >= warmup:
                kept[name].append(value)
    return {name: Samples(tuple(values)) for name, values in kept.items()}


async def timed(fn: Callable[[], Awaitable[object]]) -> Timing:
    """How long ``await fn()`` takes."""
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


async def per_call_async(fn: Callable[[], Awaitable[object]], calls: int) -> Timing:
    """Time per call of ``await fn()``, over ``calls`` back-to-back calls."""

    async def loop() -> None:
        for _ in range(calls):
            await fn()

    return await timed(loop) / calls


def per_call_sync(fn: Callable[[], object], calls: int) -> Timing:
    """Time per call of ``fn()``, over ``calls`` back-to-back calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu) / calls


def async_sampler(fn: Callable[[], Awaitable[object]], calls: int, per: int = 1) -> Sampler:
    """A sampler timing ``calls`` awaits of ``fn()``, reported per call / ``per`` (e.g. per step)."""

    async def sample() -> Timing:
        return await per_call_async(fn, calls) / per

    return sample


def sync_sampler(fn: Callable[[], object], calls: int, per: int = 1) -> Sampler:
    """A sampler timing ``calls`` calls of ``fn()``, reported per call / ``per``."""

    async def sample() -> Timing:
        return per_call_sync(fn, calls) / per

    return sample


US = 1e6  # seconds -> microseconds


def stop_group(process: subprocess.Popen[Any]) -> None:
    """End a subprocess started in a session of its own: SIGTERM to its process group, then
    SIGKILL if it is not gone within 10 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
