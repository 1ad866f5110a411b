"""W8: cold start. Import, open a SQLite store, and the first steps of a resumed run.

Every sample is a fresh Python process (``coldstart_child.py``), timed from
inside with ``time.perf_counter`` and printed as JSON. Before sampling, one
child of each kind runs as a warm-up, so the ``.pyc`` files exist (the children
run without ``PYTHONDONTWRITEBYTECODE``, as on a user's machine). Each side
resumes its own copy of a store made once by a setup child: a three-node graph
(``first`` -> ``ask`` -> ``last``) parked at the interrupt in ``ask``.

* W8-import: ``import mainspring`` against ``from langgraph.graph import
  StateGraph; from langgraph.checkpoint.sqlite import SqliteSaver`` (``asyncio``
  and ``sqlite3`` already imported in both); import + open is reported too, with
  its floor: a child that imports only Mainspring's dependencies (msgspec, anyio
  and the asyncio backend anyio loads on first use).
* W8-open: the first ``async with Runtime.open("sqlite:///...")`` of an existing
  store in a process whose ``asyncio.run`` loop is running and which has
  imported mainspring, until the body is entered. The same under ``anyio.run``
  (anyio's asyncio backend then already imported) is reported alongside.
  Anchor: ``SqliteSaver(sqlite3.connect(path, check_same_thread=False)).setup()``.
* W8-resume: from before the import to the start of ``last``, the node after the
  interrupt, resumed with a value (``rt.resume(run_id, value)``; LangGraph:
  ``invoke(Command(resume=value))`` on the thread, ``durability="sync"`` as W2).
  Also from after the imports, as the issue quoted it, and to the re-entry of the
  interrupted node (``enter``), the first node body of the resumed run.

The sides alternate in every round (order rotated); a row reports each side's
median, with min, max (the best) and n in ``extra``; the ratio is the median of
the per-round ratios.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import Result, Settings, at_most

CHILD = Path(__file__).resolve().with_name("coldstart_child.py")
SIDES = ("mainspring", "mainspring-anyio", "langgraph")
Sample = dict[str, Any]


def child_env() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: the children use and write .pyc files."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def call(args: list[str], *, flags: tuple[str, ...] = ()) -> tuple[Sample, str]:
    """Run the child; its JSON line and its stderr."""
    proc = subprocess.run(
        [sys.executable, *flags, str(CHILD), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"W8 child {args[:2]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    sample: Sample = json.loads(proc.stdout.strip().splitlines()[-1])
    return sample, proc.stderr


class Stores:
    """One parked store per side, made once; every sample resumes a fresh copy of it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.keys: dict[str, str] = {}
        self.count = 0
        for kind in ("mainspring", "langgraph"):
            template = work / f"{kind}.db"
            self.keys[kind] = call(["setup", kind, str(template)])[0]["key"]

    def measure(self, side: str, flags: tuple[str, ...] = ()) -> tuple[Sample, str]:
        kind = "langgraph" if side == "langgraph" else "mainspring"
        self.count += 1
        path = self.work / f"{side}-{self.count}.db"
        shutil.copyfile(self.work / f"{kind}.db", path)
        try:
            return call(["measure", side, str(path), self.keys[kind]], flags=flags)
        finally:
            for leftover in self.work.glob(f"{path.name}*"):
                leftover.unlink()


async def run(settings: Settings) -> list[Result]:
    work = settings.workdir / "w8"
    work.mkdir()
    stores = Stores(work)
    rounds: list[dict[str, Sample]] = []
    for round_ in range(1 + settings.pick(8, 30)):  # round 0 is the warm-up
        shift = round_ % len(SIDES)
        samples = {side: stores.measure(side)[0] for side in SIDES[shift:] + SIDES[:shift]}
        samples["deps"] = call(["deps", "-", "-"])[0]
        if round_:
            rounds.append(samples)
    diagnostics = {} if settings.quick else import_diagnostics(stores)
    return [
        _import(rounds),
        _open(rounds, diagnostics),
        _resume(rounds),
    ]


# --- the rows -----------------------------------------------------------------------


def _row(
    workload: str, rounds: list[dict[str, Sample]], key: str, extra_sides: bool = False
) -> Result:
    ms = [r["mainspring"][key] for r in rounds]
    lg = [r["langgraph"][key] for r in rounds]
    result = Result(
        workload,
        statistics.median(ms),
        statistics.median(lg),
        "ms",
        paired_ratio=statistics.median(b / a for a, b in zip(ms, lg, strict=True)),
        extra={**spread("mainspring", ms), **spread("anchor", lg)},
    )
    if extra_sides:
        result.extra.update(
            spread("mainspring_anyio", [r["mainspring-anyio"][key] for r in rounds])
        )
    return result


def spread(prefix: str, values: list[float]) -> dict[str, Any]:
    return {
        f"{prefix}_median": statistics.median(values),
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
        f"{prefix}_best": min(values),
        f"{prefix}_n": len(values),
    }


def _import(rounds: list[dict[str, Sample]]) -> Result:
    result = _row("W8-import", rounds, "import")
    total = _row("", rounds, "import_open")
    result.extra.update(
        {f"import_open_{k}": v for k, v in total.extra.items() if not k.endswith(("_best", "_n"))}
    )
    deps = [r["deps"]["import_open"] for r in rounds]
    result.extra.update(
        {f"import_open_floor_{k}": v for k, v in spread("deps", deps).items() if "median" in k}
    )
    result.checks = [
        at_most(result.mainspring, result.anchor or 0, "<= LangGraph's"),
        at_most(total.mainspring, total.anchor or 0, "import + open <= LangGraph's"),
    ]
    return result


def _open(rounds: list[dict[str, Sample]], diagnostics: dict[str, str]) -> Result:
    result = _row("W8-open", rounds, "open", extra_sides=True)
    last = rounds[-1]
    for side, name in (("mainspring", "mainspring"), ("langgraph", "anchor")):
        packages = last[side]["open_imports"]
        result.extra[f"{name}_modules_imported_by_open"] = (
            ", ".join(f"{p}:{n}" for p, n in sorted(packages.items(), key=lambda x: -x[1])) or "-"
        )
    result.extra.update(diagnostics)
    result.checks = [
        at_most(result.mainspring, 3, "<= 3 ms"),
        at_most(result.mainspring, result.anchor or 0, "<= LangGraph's"),
    ]
    return result


def _resume(rounds: list[dict[str, Sample]]) -> Result:
    result = _row("W8-resume", rounds, "resume_last")
    after = _row("", rounds, "resume_last_after_import")
    enter = _row("", rounds, "resume_enter_after_import")
    for name, row in (("after_import", after), ("enter_after_import", enter)):
        for side in ("mainspring", "anchor"):
            for stat in ("median", "min", "max"):
                result.extra[f"{name}_{side}_{stat}"] = row.extra[f"{side}_{stat}"]
    result.checks = [
        at_most(result.mainspring, result.anchor or 0, "<= LangGraph's"),
        at_most(after.mainspring, after.anchor or 0, "after imports <= LangGraph's"),
    ]
    return result


# --- where the time goes: python -X importtime --------------------------------------


def import_diagnostics(stores: Stores) -> dict[str, str]:
    """Per phase, the packages whose modules took the most import time (self time, summed)."""
    out: dict[str, str] = {}
    for side, name in (("mainspring", "mainspring"), ("langgraph", "anchor")):
        _, stderr = stores.measure(side, flags=("-X", "importtime"))
        own = "langgraph" if side == "langgraph" else "mainspring"
        for phase, packages in importtime_by_phase(stderr, own).items():
            top = sorted(packages.items(), key=lambda x: -x[1])[:6]
            if not top:
                continue
            out[f"{name}_{phase}_top_imports_ms"] = ", ".join(
                f"{p}:{us / 1e3:.1f}" for p, us in top
            )
    return out


def importtime_by_phase(stderr: str, own: str) -> dict[str, dict[str, int]]:
    """``-X importtime`` self times (us) by package, per ``coldstart: PHASE`` mark.

    Modules are grouped by top-level package, the side's ``own`` by subpackage.
    """
    phases: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in stderr.splitlines():
        if line.startswith("coldstart: "):
            current = phases.setdefault(line.removeprefix("coldstart: "), {})
        elif current is not None and line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = (
                part.strip() for part in line.removeprefix("import time:").split("|")
            )
            parts = name.split(".")
            group = ".".join(parts[:2] if parts[0] == own else parts[:1])
            current[group] = current.get(group, 0) + int(self_us)
    return phases
