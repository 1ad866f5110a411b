"""Journal events: the typed records every run is made of, and their JSON codec.

A run is an append-only sequence of :class:`Event` keyed by ``(run_id, seq)``,
``seq`` counting from 1. The journal is the single source of truth: state,
resume, streaming, telemetry and the console are all folds over it.

Event data by kind (``ts`` on the event is wall-clock seconds; a task is
identified by ``(step, task)``, its index in the superstep):

* ``run_started``: graph, fingerprint, input, durability, and optionally
  thread, metadata, ref (``module:attr`` of the graph), parent
  (``{run_id, step, task, node}`` for a subgraph run), forked_from
  (``{run_id, seq}``).
* ``step_started``: step, task, node; attempt (absent = 1); arg (a Send
  payload); rerun (true when a task runs again after a resume or crash);
  joins (join progress, on the first task of a step).
* ``step_finished``: step, task, node, update (the state delta).
* ``step_failed``: step, task, node, attempt, error ``{type, message, node,
  step, task, attempt, traceback}``, retry (bool), delay (seconds before retry).
* ``effect_started``: step, task, node, effect (index in the task), name, key
  (idempotency key), attempt.
* ``effect_finished``: step, task, node, effect, name, and result or error
  ``{type, module, message}``; usage data an effect reports may ride in ``result``.
* ``interrupted``: step, task, node, interrupt (index), id, payload; child,
  child_run, child_node when it stands for a subgraph run's interrupt.
* ``resumed``: values ``{interrupt id: value}``.
* ``emitted``: step, task, node, data.
* ``failed``: error (as above). ``finished``: nothing. ``cancelled``: reason.
"""

from __future__ import annotations

import enum
from typing import Any, Final, NamedTuple

import orjson

from .errors import SerializationError


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"  # one attempt of a task failed; data says whether it retries
    EFFECT_STARTED = "effect_started"
    EFFECT_FINISHED = "effect_finished"
    INTERRUPTED = "interrupted"
    RESUMED = "resumed"
    EMITTED = "emitted"
    FAILED = "failed"
    FINISHED = "finished"
    CANCELLED = "cancelled"


TERMINAL_KINDS: Final = frozenset({EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED})


class Event(NamedTuple):
    """One journal record. ``data`` holds JSON-compatible values only."""

    run_id: str
    seq: int
    kind: EventKind
    ts: float
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "kind": str(self.kind),
            "ts": self.ts,
            "data": self.data,
        }


def _default(value: Any) -> Any:
    # Pydantic models are duck-typed so that the codec does not import pydantic eagerly.
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode a JSON-compatible value (pydantic models and dataclasses included)."""
    try:
        return orjson.dumps(value, default=_default)
    except TypeError as exc:
        raise SerializationError(
            f"{what} is not JSON-compatible ({exc}); store JSON data, pydantic models or "
            "dataclasses (dict keys must be strings)"
        ) from None


def decode(data: bytes | str) -> Any:
    return orjson.loads(data)


def to_jsonable(value: Any, *, what: str = "value") -> Any:
    """Return ``value`` as plain JSON data (dicts, lists, str, numbers, bool, None)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return decode(encode(value, what=what))
