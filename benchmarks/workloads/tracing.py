"""W7: what tracing from the journal adds to W1, through ``benchmarks/w7_tracing.py``.

That script (the telemetry side's own, runnable alone) measures W1 with and
without a journal tracer, interleaved in one process. Here its result becomes
a row of the suite; the anchor is W1 without tracing, so ``ratio`` is below 1
by nature and the target is on ``added_us_per_step``. Skipped, with the
reason, when the telemetry extra (OpenTelemetry) is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness import Result, Settings, at_most, skipped

TARGET_US = 15.0


async def run(settings: Settings) -> list[Result]:
    try:
        w7 = importlib.import_module("w7_tracing")
    except ImportError as exc:
        return [skipped("W7", "us/step", f"needs mainspring's telemetry extra ({exc})")]
    measured: dict[str, Any] = await w7.measure(settings.quick)
    added = float(measured["added_us_per_step"])
    result = Result(
        "W7",
        float(measured["mainspring"]),
        float(measured["anchor"]),
        "us/step",
        extra={
            "added_us_per_step": added,
            "hot_path_only_added_us": measured.get("hot_path_only_added_us"),
            "metrics_added_us": measured.get("metrics_added_us"),
            "note": "anchor = W1 without tracing (Mainspring itself)",
        },
    )
    result.checks = [at_most(added, TARGET_US, f"<= {TARGET_US:g} us added per step")]
    return [result]
