"""W11-sandbox: start-up of a sandboxed run, Python and shell, p50 and p99.

Each sample is one whole ``Sandbox.run_python("print(1)")`` or ``run_shell("true")``
call, run one after another: the host dirs made and removed, bubblewrap's namespaces
and mounts, the rlimits wrapper, the interpreter's start, output read, produced files
looked for. Beside them, in the same rounds, the floors: the same interpreter started
without any sandbox, and bubblewrap running ``/bin/true`` with the sandbox's own
arguments. Target (issue 12): p50 <= 100 ms and p99 <= 250 ms.

    python benchmarks/run.py --only W11-sandbox      # or, alone:
    cd benchmarks && python -m workloads.sandbox [--quick]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from mainspring.tools.sandbox import Sandbox, SandboxLimits, _bwrap

from harness import Result, Settings, at_most, skipped

MS = 1e3
Sample = Callable[[], Awaitable[object]]


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _floor_python(python: str, flags: tuple[str, ...]) -> Sample:
    async def sample() -> object:
        return subprocess.run([python, *flags, "-c", "print(1)"], capture_output=True, env={})

    return sample


def _floor_bwrap(python: str) -> Sample:
    argv = _bwrap.command(
        _bwrap.find_bwrap(None) or "bwrap", SandboxLimits(), python=python, binds=[], chdir="/"
    )

    async def sample() -> object:
        return subprocess.run([*argv, "/bin/true"], capture_output=True, **_bwrap.spawn_options())  # type: ignore[call-overload]

    return sample


async def _measure(contenders: dict[str, Sample], runs: int) -> dict[str, list[float]]:
    """``runs`` samples of each contender, interleaved round by round, after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(5):
        for sample in contenders.values():
            await sample()
    for i in range(runs):
        names = list(contenders)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            await contenders[name]()
            times[name].append(time.perf_counter() - started)
    return times


async def run(settings: Settings) -> list[Result]:
    why = Sandbox.available()
    if why is not None:
        return [skipped("W11-sandbox", "ms p50", f"the sandbox cannot start here: {why}")]
    runs = settings.pick(200, 400)
    box, bare = Sandbox(), Sandbox(python_flags=("-I", "-S", "-B"))
    contenders: dict[str, Sample] = {
        "python": lambda: box.run_python("print(1)"),
        "python -S": lambda: bare.run_python("print(1)"),
        "shell": lambda: box.run_shell("true"),
        "floor: python, no sandbox": _floor_python(box.python, ("-I", "-B")),
        "floor: bwrap /bin/true": _floor_bwrap(box.python),
    }
    times = await _measure(contenders, runs)
    stats = {
        name: {"p50_ms": quantile(t, 0.5) * MS, "p99_ms": quantile(t, 0.99) * MS}
        for name, t in times.items()
    }
    extra = {f"{k} {name}": v for name, s in stats.items() for k, v in s.items()}
    results = []
    for name in ("python", "shell"):
        p50, p99 = stats[name]["p50_ms"], stats[name]["p99_ms"]
        result = Result(f"W11-sandbox-{name}", p50, None, "ms p50", extra={"runs": runs, **extra})
        result.checks = [at_most(p50, 100.0, "p50 <= 100 ms"), at_most(p99, 250.0, "p99 <= 250 ms")]
        results.append(result)
    return results


if __name__ == "__main__":
    import json
    import tempfile
    from pathlib import Path

    import anyio

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        outcome = anyio.run(run, Settings(quick=quick, workdir=Path(tmp), pg_url=""))
    for line in outcome:
        print(json.dumps(line.to_json(), indent=1))
