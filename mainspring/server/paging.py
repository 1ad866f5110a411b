"""Keyset paging of runs (``GET /v1/runs?cursor=``): pages that neither repeat nor skip a
run while runs start during the iteration, which offsets cannot promise (a new run
shifts every later offset by one).

Runs are listed newest first, ordered by (created_at, run_id) descending. A cursor is
the (created_at, run_id) of the last run of a page, opaque to clients; the next page is
the runs strictly after it in that order. The stores filter on ``created_at`` only (with
strict bounds), so a page is read in two parts: the runs of exactly the cursor's
``created_at`` whose run_id sorts after it (usually none), then the runs created before.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Awaitable, Callable

import orjson

from ..store import RunRecord
from .errors import ApiError

#: ``list_runs`` of the caller's view, with the route's other filters bound.
ListRuns = Callable[..., Awaitable[list[RunRecord]]]


def encode_cursor(record: RunRecord) -> str:
    raw = orjson.dumps([record.created_at, record.run_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = orjson.loads(raw)
        if isinstance(created_at, int | float) and isinstance(run_id, str):
            return float(created_at), run_id
    except (ValueError, TypeError, orjson.JSONDecodeError):
        pass
    # 404 as for a run id that names no run (and as Stripe's starting_after does).
    raise ApiError(
        404,
        "cursor_not_found",
        "no such page: the cursor is not one this server gave; pass a page's next_cursor as it is",
    )


async def runs_after(
    list_runs: ListRuns,
    cursor: tuple[float, str],
    count: int,
    created_after: float | None,
    created_before: float | None,
    skip: int = 0,
) -> list[RunRecord]:
    """Up to ``count`` runs after ``cursor`` (newest first), within the caller's bounds,
    the first ``skip`` of them left out (``offset`` counted from the cursor)."""
    at, last_id = cursor
    found: list[RunRecord] = []
    # 1. Runs created at exactly ``at`` (bounds just around it) sorting after ``last_id``.
    low = math.nextafter(at, -math.inf)
    high = math.nextafter(at, math.inf)
    low = low if created_after is None else max(low, created_after)
    high = high if created_before is None else min(high, created_before)
    offset = 0
    while low < at < high and len(found) < count:
        ties = await list_runs(
            created_after=low, created_before=high, limit=count + 1, offset=offset
        )
        after = [r for r in ties if r.run_id < last_id]
        skipped = min(skip, len(after))
        skip -= skipped
        found += after[skipped:][: count - len(found)]
        if len(ties) <= count:
            break
        offset += len(ties)
    # 2. Then the runs created before ``at``.
    if len(found) < count:
        before = at if created_before is None else min(at, created_before)
        found += await list_runs(
            created_after=created_after,
            created_before=before,
            limit=count - len(found),
            offset=skip,
        )
    return found


__all__ = ["decode_cursor", "encode_cursor", "runs_after"]
