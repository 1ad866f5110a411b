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
* ``discarded``: step, task, node, attempt, and for an effect effect, name, key; result
  or error; seconds. What a worker thread returned after its node timed out or its run
  stopped waiting for it (a thread cannot be stopped): recorded, never used.
* ``failed``: error (as above). ``finished``: nothing. ``cancelled``: reason.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
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
    DISCARDED = "discarded"  # a late result of an abandoned worker thread, kept for the record
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


def jsonable_or_repr(value: Any) -> Any:
    """``value`` as JSON data if it is JSON-compatible, else its ``repr``: for values
    recorded for the record only, which must never fail a write."""
    try:
        return to_jsonable(value)
    except SerializationError:
        return repr(value)


def check_faithful(value: Any, what: str, revive: Callable[[Any], Any] | None = None) -> None:
    """Refuse (SerializationError) a value the journal would give back changed: what a live
    run sees must be what every resumed run sees. ``revive`` turns JSON back into the
    declared type, where a type is declared (a set, a datetime, a model)."""
    if plain_json(value):
        return
    back = decode(encode(value, what=what))
    if revive is not None and back is not None:
        back = revive(back)
    where = difference(value, back)
    if where is not None:
        raise SerializationError(
            f"{what} cannot be kept as it is by the journal: {where}; store plain JSON "
            "values (dicts, lists, str, numbers, bool, None), or declare the type"
        )


def difference(value: Any, back: Any, path: str = "") -> str | None:
    """Where ``back`` (``value`` after a trip through the journal) differs from it, said for
    a person; None if it is the same, type for type."""
    if type(value) is not type(back):
        if type(value) is float and back is None and not math.isfinite(value):
            return f"{path} is {value!r}, which JSON cannot hold (it would come back as None)"
        return (
            f"{path or 'the value'} is a {type(value).__name__}, which would come back as "
            f"a {type(back).__name__}"
        )
    if type(value) is dict:
        if value.keys() != back.keys():
            return f"{path} has keys that would not come back as they are (non-string keys?)"
        for key, item in value.items():
            found = difference(item, back[key], f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if type(value) is list or type(value) is tuple:
        if len(value) != len(back):
            return f"{path} would come back with {len(back)} items instead of {len(value)}"
        for i, (item, other) in enumerate(zip(value, back, strict=True)):
            found = difference(item, other, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found = difference(getattr(value, f.name), getattr(back, f.name), f"{path}.{f.name}")
            if found is not None:
                return found
        return None
    if value != back:
        return f"{path} would come back as {back!r} instead of {value!r}"
    return None


def plain_json(value: Any) -> bool:
    """Whether ``value`` is plain JSON (str, int, finite float, bool, None, and lists and
    str-keyed dicts of those): what the journal gives back exactly as it took it."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dict:
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    if t is list:
        return all(plain_json(v) for v in value)
    return False
