"""What the limits backend says of each tool: breaker state, tokens, calls in flight.

``await Resilience.states(tools)`` and ``mainspring tools --limits URL`` read it. The
backend's keys are ``b:<tool>[:<tenant>]`` (breakers), ``r:<tool>[:<tenant>]`` (token
buckets) and ``c:<tool>[:<tenant>]`` (concurrency slots); a tool with no state there
is closed, with a full bucket and nothing in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .breaker import CLOSED, Breaker, describe

if TYPE_CHECKING:
    from .limits import LimitsBackend
    from .tool import Tool


@dataclass(frozen=True, slots=True)
class ToolState:
    """One tool's (or one tool and tenant's) limits and their state now."""

    tool: str
    tenant: str | None = None  # set for limits and breakers kept per tenant
    breaker: str = CLOSED  # closed, open, half_open; "-" for a tool without one
    failures: int = 0  # consecutive failed calls (closed)
    retry_in: float | None = None  # seconds until an open breaker lets a probe through
    tokens: float | None = None  # in the bucket now (None: no rate limit, or not known)
    in_flight: int = 0  # slots held
    rate: float | None = None
    burst: int | None = None
    concurrency: int | None = None


async def read_states(backend: LimitsBackend, tools: Sequence[Tool]) -> list[ToolState]:
    """The state of ``tools`` (every tool and tenant the backend knows, if none given)."""
    snap = await backend.snapshot()
    now = float(snap.pop("now"))
    by_name = {t.name: t for t in tools}
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for t in tools:
        rows[(t.name, None)] = {}
    for key, state in snap.items():
        kind, _, rest = key.partition(":")
        name, _, tenant = rest.partition(":")
        if kind not in ("b", "r", "c") or (by_name and name not in by_name):
            continue
        rows.setdefault((name, tenant or None), {})[kind] = state
    return [
        _state(name, tenant, found, by_name.get(name), now)
        for (name, tenant), found in sorted(rows.items(), key=lambda r: (r[0][0], r[0][1] or ""))
    ]


def _state(
    name: str, tenant: str | None, found: dict[str, Any], tool: Tool | None, now: float
) -> ToolState:
    cfg: Breaker | None = tool.breaker if tool is not None else None
    has_breaker = tool is None or cfg is not None
    breaker, retry_in = describe(found.get("b"), cfg, now) if has_breaker else ("-", None)
    failures = int(found["b"]["c"]) if found.get("b") else 0
    rate = tool.rate if tool is not None else None
    burst = (tool.burst or max(1, int(rate))) if tool is not None and rate else None
    tokens: float | None = None
    bucket = found.get("r")
    if bucket is not None:
        tokens = (
            bucket[0]
            if rate is None
            else min(float(burst or 1), bucket[0] + (now - bucket[1]) * rate)
        )
    elif rate is not None:
        tokens = float(burst or 1)
    slots = found.get("c") or {}
    return ToolState(
        tool=name,
        tenant=tenant,
        breaker=breaker,
        failures=failures,
        retry_in=retry_in,
        tokens=tokens,
        in_flight=sum(1 for expires in slots.values() if expires > now),
        rate=rate,
        burst=burst,
        concurrency=tool.concurrency if tool is not None else None,
    )
