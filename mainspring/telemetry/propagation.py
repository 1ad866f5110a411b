"""Handing the trace on: the W3C ``traceparent`` of the effect that is running now.

Inside ``ctx.step(name, fn)``, an effect's span id is known before its span
exists: it is derived from the run and the effect's idempotency key (see
:mod:`.ids`). Pass it to the service the effect calls so its spans join the run's trace::

    async def lookup(order_id: str) -> dict:
        headers = trace_headers(ctx)                  # {"traceparent": "00-...-...-01"}
        return (await http.get(url, headers=headers)).json()

    order = await ctx.step("tool:orders.lookup", lookup, order_id)

Clients instrumented by OpenTelemetry pick the context up by themselves inside
``with use_trace_context(ctx): ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .ids import effect_span_id, format_traceparent
from .ids import trace_id as tree_trace_id

if TYPE_CHECKING:
    from ..engine.context import Context


def root_run_id(ctx: Context) -> str:
    """The top run of ``ctx``'s subgraph tree (whose id and nonce name the trace)."""
    return ctx.root_run_id


def trace_id(ctx: Context) -> int:
    """The trace id of ``ctx``'s run, as the tracer derives it from the journal."""
    return tree_trace_id(ctx.root_run_id, ctx.root_nonce)


def span_context(ctx: Context) -> tuple[int, int] | None:
    """``(trace id, span id)`` of the effect running now, or None outside ``ctx.step``."""
    key = ctx.idempotency_key
    if key is None:
        return None
    return trace_id(ctx), effect_span_id(ctx.run_id, key)


def traceparent(ctx: Context) -> str | None:
    """The W3C ``traceparent`` of the effect running now, or None outside ``ctx.step``."""
    found = span_context(ctx)
    return None if found is None else format_traceparent(*found)


def trace_headers(ctx: Context) -> dict[str, str]:
    """HTTP headers that make the called service's spans children of the effect's span."""
    value = traceparent(ctx)
    return {} if value is None else {"traceparent": value}


@contextmanager
def use_trace_context(ctx: Context) -> Iterator[None]:
    """Make the running effect's span the current OpenTelemetry context (needs opentelemetry-api)."""
    found = span_context(ctx)
    if found is None:
        yield
        return
    from opentelemetry import context, trace

    span = trace.NonRecordingSpan(
        trace.SpanContext(found[0], found[1], True, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    )
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)
