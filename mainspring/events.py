"""Journal events: the typed records every run is made of, and their one JSON codec.

A run is an append-only sequence of :class:`Event` keyed by ``(run_id, seq)``,
``seq`` counting from 1. The journal is the single source of truth: state,
resume, streaming, telemetry and the console are all folds over it.

An event's ``data`` is one frozen type per kind (below; ``KIND_OF`` maps each to its
:class:`EventKind`), a msgspec Struct: cheap to make, read by attribute, encoded and
decoded (and checked) by msgspec. Stores keep the kind in a column of its own and the
data as a JSON object, the format release 0.1 wrote: fields at their default are left
out, and a field the reader does not know is ignored, so older and newer journals read.
User code that reads ``event.data.get("node")`` keeps working: data answers ``get``,
``[key]`` and ``in`` for the fields it holds.

A task is identified by ``(step, task)``, its index in the superstep; ``ts`` on the
event is wall-clock seconds.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Final, NamedTuple

import msgspec

from .errors import SerializationError

UNSET: Final = msgspec.UNSET  # a field the event does not carry (not even as null)


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"  # one attempt of a task failed; data says whether it retries
    EFFECT_STARTED = "effect_started"
    EFFECT_DECIDED = "effect_decided"  # a gate hook denied, asked about, answered or changed a call
    EFFECT_FINISHED = "effect_finished"
    INTERRUPTED = "interrupted"
    RESUMED = "resumed"
    EMITTED = "emitted"
    DISCARDED = "discarded"  # a late result of an abandoned worker thread, kept for the record
    FAILED = "failed"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    # Never journaled: live subscribers of run.events() only (a model's tokens as they stream).
    MODEL_DELTA = "model_delta"


TERMINAL_KINDS: Final = frozenset({EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED})
# Read on every run's path; a module constant, not ``EventKind.X`` (~850 instructions on
# Python 3.11, whose enum metaclass has a ``__getattr__``: see ``status.RUNNING``).
RUN_STARTED: Final = EventKind.RUN_STARTED
INTERRUPTED: Final = EventKind.INTERRUPTED


# -- event data, one type per kind ---------------------------------------------------------------


class Record(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A typed journal record. gc=False: never tracked by the cyclic garbage collector
    (a record refers to no object that refers back to it), so a busy runtime's journals
    cost the collector nothing. Reads like a dict too (``get``, ``[key]``, ``in``), for
    code written when event data was a dict."""

    _optional: ClassVar[frozenset[str]] = frozenset()  # fields whose None means "absent"

    def __contains__(self, name: object) -> bool:
        value = getattr(self, name, UNSET) if isinstance(name, str) else UNSET
        return value is not UNSET and not (value is None and name in self._optional)

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """The field ``name`` if the event holds it, else ``default`` (as a dict would)."""
        return getattr(self, name) if name in self else default

    def keys(self) -> Iterator[str]:
        return (f for f in self.__struct_fields__ if f in self)

    def as_dict(self) -> dict[str, Any]:
        """The fields the record holds, as a dict of their (unconverted) values."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if f in self}


class EventData(Record, frozen=True):
    """The data of one event; each kind of event has a type of its own (below)."""

    kind: ClassVar[EventKind]


class ErrorInfo(Record, frozen=True):
    """An error as the journal records it: a failed attempt, a failed effect, a run."""

    _optional = frozenset({"module", "node", "step", "task", "attempt", "traceback"})

    type: str
    message: str = ""
    module: str | None = None  # of the exception type, to raise it again on resume
    node: str | None = None
    step: int | None = None
    task: int | None = None
    attempt: int | None = None
    traceback: str | None = None

    @property
    def summary(self) -> str:
        """``type: message``, as logs, the CLI and a failed run's record show it."""
        return f"{self.type}: {self.message}"


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as the journal records an effect's failure: enough to raise it again."""
    return ErrorInfo(type(exc).__name__, str(exc), type(exc).__module__)


class ParentRef(Record, frozen=True):
    """Where a subgraph run sits in its parent run (and the root run of the trace)."""

    _optional = frozenset({"root_nonce"})

    run_id: str
    root: str
    step: int
    task: int
    node: str
    root_nonce: str | None = None


class ForkedFrom(Record, frozen=True):
    _optional = frozenset({"nonce", "effects", "actor"})
    run_id: str
    seq: int
    nonce: str | None = None  # the source's, which names its trace
    effects: str | None = None  # "reuse": the fork answers effects from the source's journal
    actor: str | None = None  # who forked it, when named (the audit trail's "who")


class RunStarted(EventData, frozen=True):
    kind = EventKind.RUN_STARTED
    _optional = frozenset({"thread", "metadata", "ref", "parent", "forked_from", "nonce"})
    graph: str
    fingerprint: str = ""
    input: Any = None
    durability: str = "sync"
    thread: str | None = None
    metadata: dict[str, Any] | None = None
    ref: str | None = None  # ``module:attr`` of the graph
    parent: ParentRef | None = None  # a subgraph run's place in its parent
    forked_from: ForkedFrom | None = None
    nonce: str | None = None  # per run, mixed into trace ids


class StepStarted(EventData, frozen=True):
    kind = EventKind.STEP_STARTED
    _optional = frozenset({"joins"})
    step: int
    task: int
    node: str
    attempt: int = 1
    arg: Any = UNSET  # a Send payload (absent: the task reads the graph state)
    rerun: bool = False  # the task runs again after a resume or crash
    joins: dict[str, list[str]] | None = None  # join progress, on a step's first task


class StepFinished(EventData, frozen=True):
    kind = EventKind.STEP_FINISHED
    step: int
    task: int
    node: str
    update: Any = None  # the state delta


class StepFailed(EventData, frozen=True):
    kind = EventKind.STEP_FAILED
    step: int
    task: int
    node: str
    attempt: int
    error: ErrorInfo
    retry: bool = False
    delay: float = 0.0  # seconds before the retry


class EffectStarted(EventData, frozen=True):
    kind = EventKind.EFFECT_STARTED
    _optional = frozenset({"basis"})
    step: int
    task: int
    node: str
    effect: int  # index in the task
    name: str
    key: str  # idempotency key
    attempt: int = 1
    effect_kind: str = "effect"  # effect (ctx.step), tool, model, memory, publish
    args: Any = UNSET  # the arguments, redacted and capped in size (the gate)
    # What the hooks that let the call go said of it, by hook (e.g. a policy's version and
    # rule): an allow is recorded here, not as an effect_decided event of its own.
    basis: dict[str, Any] | None = None


class EffectDecided(EventData, frozen=True):
    """A gate hook's decision about a call, other than letting it go as it was."""

    kind = EventKind.EFFECT_DECIDED
    _optional = frozenset({"basis"})
    step: int
    task: int
    node: str
    effect: int
    name: str
    decision: str  # deny, approve, approved, rejected, edited, answer, rewrite, after
    hook: str = ""
    reason: str = ""
    basis: dict[str, Any] | None = None  # what made it (e.g. a policy's version and rule)


class EffectFinished(EventData, frozen=True):
    kind = EventKind.EFFECT_FINISHED
    _optional = frozenset({"error", "reused", "usage"})
    step: int
    task: int
    node: str
    effect: int
    name: str
    result: Any = UNSET
    error: ErrorInfo | None = None
    reused: dict[str, Any] | None = None  # {run_id, seq}: taken from a fork's source
    usage: dict[str, Any] | None = None  # what the call reports it used (tokens, cost...)

    @property
    def ok(self) -> bool:
        return self.error is None


class Interrupted(EventData, frozen=True):
    kind = EventKind.INTERRUPTED
    _optional = frozenset({"child", "child_run", "child_node"})
    step: int
    task: int
    node: str
    interrupt: int  # index in the task
    id: str
    payload: Any = None
    child: str | None = None  # the subgraph run's interrupt this one stands for
    child_run: str | None = None
    child_node: str | None = None


class Resumed(EventData, frozen=True):
    kind = EventKind.RESUMED
    _optional = frozenset({"actor"})
    values: dict[str, Any]  # interrupt id -> value
    actor: str | None = None  # who answered (an approver), when named: the audit trail's "who"


class Emitted(EventData, frozen=True):
    kind = EventKind.EMITTED
    step: int
    task: int
    node: str
    data: Any = None


class Discarded(EventData, frozen=True):
    """What a worker thread returned after its node timed out or its run stopped waiting
    for it (a thread cannot be stopped): recorded, never used."""

    kind = EventKind.DISCARDED
    _optional = frozenset({"effect", "name", "key", "error"})
    step: int
    task: int
    node: str
    attempt: int
    seconds: float = 0.0
    effect: int | None = None
    name: str | None = None
    key: str | None = None
    result: Any = UNSET
    error: ErrorInfo | None = None


class Failed(EventData, frozen=True):
    kind = EventKind.FAILED
    error: ErrorInfo


class Finished(EventData, frozen=True):
    kind = EventKind.FINISHED


class Cancelled(EventData, frozen=True):
    kind = EventKind.CANCELLED
    _optional = frozenset({"actor"})
    reason: str = ""
    actor: str | None = None  # who cancelled it, when named: the audit trail's "who"


class ModelDelta(EventData, frozen=True):
    """A piece of a model's answer as it streams, for live subscribers of ``run.events()``.

    Never journaled (no write per token): its ``seq`` is that of the last event
    recorded before it, and the journal keeps the whole answer in ``effect_finished``,
    which is what a subscriber joining late sees.
    """

    kind = EventKind.MODEL_DELTA
    _optional = frozenset({"tool_call", "partial", "restart"})
    step: int
    task: int
    node: str
    effect: int
    name: str
    text: str = ""
    reasoning: str = ""
    tool_call: dict[str, Any] | None = None  # {index, id, name, arguments: the next fragment}
    partial: Any = None  # the structured output (or tool-call arguments) parsed so far
    restart: str | None = (
        None  # the stream started over (a retry, a fallback): drop the text so far
    )


#: Kinds that reach live subscribers but never the journal.
TRANSIENT_KINDS: Final = frozenset({EventKind.MODEL_DELTA})


DATA_TYPES: Final[dict[EventKind, type[EventData]]] = {
    t.kind: t
    for t in (
        RunStarted,
        StepStarted,
        StepFinished,
        StepFailed,
        EffectStarted,
        EffectDecided,
        EffectFinished,
        Interrupted,
        Resumed,
        Emitted,
        Discarded,
        Failed,
        Finished,
        Cancelled,
    )
}

#: The kinds of event data that belong to one task of a step (``step``, ``task``, ``node``).
TASK_DATA: Final = (
    StepStarted,
    StepFinished,
    StepFailed,
    EffectStarted,
    EffectFinished,
    Interrupted,
    Emitted,
    Discarded,
)


class Event(NamedTuple):
    """One journal record: where it sits (``run_id``, ``seq``), when, and its typed data."""

    run_id: str
    seq: int
    kind: EventKind
    ts: float
    data: EventData

    @classmethod
    def of(cls, run_id: str, seq: int, ts: float, data: EventData) -> Event:
        return cls(run_id, seq, data.kind, ts, data)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "kind": str(self.kind),
            "ts": self.ts,
            "data": msgspec.to_builtins(self.data, enc_hook=_enc_hook),
        }


def make_event(run_id: str, seq: int, kind: EventKind | str, ts: float, fields: Any) -> Event:
    """An event from its kind and its fields as plain data (a dict, as JSON gives them).

    Checks the fields against the kind's type: an event the journal could not read back
    is refused here, with what is wrong.
    """
    kind = EventKind(kind)
    try:
        data = msgspec.convert(fields, DATA_TYPES[kind], strict=False)
    except msgspec.ValidationError as exc:
        raise SerializationError(f"{kind} event data does not fit its type: {exc}") from None
    return Event(run_id, seq, kind, ts, data)


# -- the codec ----------------------------------------------------------------------------------


def _enc_hook(value: Any) -> Any:
    # Pydantic models are duck-typed so that the codec does not import pydantic eagerly.
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise NotImplementedError(type(value).__name__)


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
_DECODER: Final = msgspec.json.Decoder()
# Built on first use of each kind: a typed decoder costs ~0.1 ms to build, and a
# process that only writes (or reads a few kinds) should not pay for all of them.
_DATA_DECODERS: Final[dict[EventKind, msgspec.json.Decoder[EventData]]] = {}


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode a JSON-compatible value (event data, pydantic models and dataclasses included)."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, NotImplementedError, OverflowError) as exc:
        raise SerializationError(
            f"{what} is not JSON-compatible ({exc}); store JSON data, pydantic models or "
            "dataclasses"
        ) from None


def decode(data: bytes | str) -> Any:
    return _DECODER.decode(data)


def decode_data(kind: EventKind, data: bytes | str) -> EventData:
    """An event's data as a store keeps it (its JSON object) back as its type."""
    decoder = _DATA_DECODERS.get(kind)
    if decoder is None:
        decoder = _DATA_DECODERS[kind] = msgspec.json.Decoder(DATA_TYPES[kind])
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SerializationError(f"a stored {kind} event does not fit its type: {exc}") from None


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
