"""Deterministic trace and span ids, derived from what the journal says.

Ids are hashes, not random numbers: any process that reads a run's journal
(the live one, another process resuming it, the CLI after the fact) derives
the same ids, so a resumed run continues its trace without storing anything.

* trace: the root run id and the root run's ``nonce`` (random, recorded in its
  ``run_started``; a subgraph run records its root's as ``parent.root_nonce``).
  Run ids may be chosen by the caller, so two stores (staging and prod) can
  hold runs of the same id: the nonce keeps their traces apart. A run written
  before nonces existed has none and keeps the trace id of the run id alone;
* run span: the run id;
* node attempt span: the run id and the ``seq`` of the attempt's ``step_started``;
* effect span: the run id and the effect's idempotency key (which an effect can
  read as ``ctx.idempotency_key``, so it can compute its own span id; its trace
  id is ``trace_id(ctx.root_run_id, ctx.root_nonce)``, or simply use
  :func:`~.propagation.traceparent`);
* interrupt-wait span: the run id and the interrupt id.

Span ids need no nonce: a span is identified by its trace id and span id together.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Final

from ..events import RunStarted

_SEP: Final = "\x1f"
# A subgraph run's id is ``parent/node.step.task`` (``.aN`` for a retried attempt).
_CHILD_SUFFIX: Final = re.compile(r"/[^/]+\.\d+\.\d+(?:\.a\d+)?$")


def _hash(size: int, *parts: str) -> int:
    value = int.from_bytes(
        hashlib.blake2b(_SEP.join(parts).encode(), digest_size=size).digest(), "big"
    )
    return value or 1  # all-zero ids are invalid in W3C trace context


def trace_id(root_run_id: str, nonce: str | None = None) -> int:
    """The trace of a run tree: its root run's id and the nonce its start recorded."""
    if nonce is None:  # a run from before nonces: its trace id stays what it was
        return _hash(16, "trace", root_run_id)
    return _hash(16, "trace", root_run_id, nonce)


def trace_of(run_id: str, started: RunStarted) -> int:
    """The trace of run ``run_id``, from the data of its ``run_started`` event."""
    parent = started.parent
    if parent is not None:
        return trace_id(parent.root or guess_root(parent.run_id), parent.root_nonce)
    return trace_id(run_id, started.nonce)


def run_span_id(run_id: str) -> int:
    return _hash(8, "run", run_id)


_MASK: Final = (1 << 64) - 1


@lru_cache(maxsize=4096)
def _run_base(run_id: str) -> int:
    return _hash(8, "task", run_id)


def attempt_span_id(run_id: str, seq: int) -> int:
    # One per step on the telemetry thread: a splitmix64 step from a per-run hash
    # (distinct for every seq of a run) instead of a hash of each (run, seq).
    z = (_run_base(run_id) + 0x9E3779B97F4A7C15 * seq) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) or 1


def effect_span_id(run_id: str, key: str) -> int:
    return _hash(8, "effect", run_id, key)


def abandoned_effect_span_id(run_id: str, key: str, seq: int) -> int:
    """An effect that started, never finished, and was started again with the same key."""
    return _hash(8, "effect", run_id, key, str(seq))


def wait_span_id(run_id: str, interrupt_id: str) -> int:
    return _hash(8, "wait", run_id, interrupt_id)


def guess_root(run_id: str) -> str:
    """The root run of ``run_id`` judged from its id alone (when no journal says it)."""
    while True:
        stripped = _CHILD_SUFFIX.sub("", run_id)
        if stripped == run_id or not stripped:
            return run_id
        run_id = stripped


def format_traceparent(trace: int, span: int, *, sampled: bool = True) -> str:
    """A W3C ``traceparent`` header value."""
    return f"00-{trace:032x}-{span:016x}-{'01' if sampled else '00'}"


def hex_trace(trace: int) -> str:
    return f"{trace:032x}"


def hex_span(span: int) -> str:
    return f"{span:016x}"
