"""What the client returns: the API's JSON (docs/server.md, "Objects") as typed values.

Parsing is lenient about fields the server adds later (ignored) and strict about the
kind of a journal event (checked by :func:`mainspring.events.make_event`, the journal's
own codec), so an event read over HTTP is the same :class:`~mainspring.events.Event` a
local ``runtime.events()`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import SerializationError
from ..events import Event, EventKind, ModelDelta, make_event
from ..status import RunStatus


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A question a parked run waits on; answer it with ``resume`` or ``approve``."""

    interrupt_id: str
    node: str
    payload: Any
    run_id: str | None = None  # the fields below come with GET /v1/interrupts
    graph: str | None = None
    thread: str | None = None
    tenant: str | None = None
    since: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interrupt:
        return cls(
            interrupt_id=str(data.get("interrupt_id") or data.get("id") or ""),
            node=str(data.get("node") or ""),
            payload=data.get("payload"),
            run_id=data.get("run_id"),
            graph=data.get("graph"),
            thread=data.get("thread"),
            tenant=data.get("tenant"),
            since=data.get("since"),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a run stands when it stops moving (``RunOutcome`` of the runtime)."""

    status: RunStatus
    state: Any
    seq: int
    interrupts: list[Interrupt] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            status=RunStatus(data["status"]),
            state=data.get("state"),
            seq=int(data.get("seq") or 0),
            interrupts=[Interrupt.from_json(i) for i in data.get("interrupts") or ()],
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Run:
    """A run's summary; ``outcome`` is there when the server said where it stands
    (``get_run``, and ``start``/``resume`` with ``wait=True``)."""

    run_id: str
    graph: str
    status: RunStatus
    thread: str | None = None
    version: str | None = None
    tenant: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    last_seq: int = 0
    parent_run_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None
    usage: dict[str, Any] | None = None  # model calls, tokens and cost (``get_run``)
    durability: str | None = None
    queue: dict[str, Any] | None = None  # the run queue a worker takes it from (queue mode)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        outcome = data.get("outcome")
        return cls(
            run_id=str(data["run_id"]),
            graph=str(data.get("graph") or ""),
            status=RunStatus(data["status"]),
            thread=data.get("thread"),
            version=data.get("version"),
            tenant=str(data.get("tenant") or ""),
            created_at=float(data.get("created_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            last_seq=int(data.get("last_seq") or 0),
            parent_run_id=data.get("parent_run_id"),
            error=data.get("error"),
            metadata=dict(data.get("metadata") or {}),
            outcome=Outcome.from_json(outcome) if isinstance(outcome, dict) else None,
            usage=data.get("usage"),
            durability=data.get("durability"),
            queue=data.get("queue") if isinstance(data.get("queue"), dict) else None,
        )


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run accepted on a busy thread (``multitask="enqueue"``): it starts, with this
    ``run_id``, when the run ``after`` ends."""

    run_id: str
    graph: str
    thread: str
    after: str
    tenant: str = ""
    queued_at: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedRun:
        return cls(
            run_id=str(data["run_id"]),
            graph=str(data.get("graph") or ""),
            thread=str(data.get("thread") or ""),
            after=str(data.get("after") or ""),
            tenant=str(data.get("tenant") or ""),
            queued_at=float(data.get("queued_at") or 0.0),
        )


def run_or_queued(data: dict[str, Any]) -> Run | QueuedRun:
    return QueuedRun.from_json(data) if data.get("status") == "queued" else Run.from_json(data)


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation: its runs, the latest of them."""

    thread: str
    runs: int
    last_run_id: str
    last_status: RunStatus
    updated_at: float
    tenant: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Thread:
        return cls(
            thread=str(data["thread"]),
            runs=int(data.get("runs") or 0),
            last_run_id=str(data.get("last_run_id") or ""),
            last_status=RunStatus(data.get("last_status") or "running"),
            updated_at=float(data.get("updated_at") or 0.0),
            tenant=str(data.get("tenant") or ""),
        )


@dataclass(frozen=True, slots=True)
class ThreadDetail:
    """A thread with its runs (newest first), the one still open, and those queued behind it."""

    thread: str
    tenant: str
    runs: list[Run]
    open_run_id: str | None = None
    queued: list[QueuedRun] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThreadDetail:
        return cls(
            thread=str(data["thread"]),
            tenant=str(data.get("tenant") or ""),
            runs=[Run.from_json(r) for r in data.get("runs") or ()],
            open_run_id=data.get("open_run_id"),
            queued=[QueuedRun.from_json(q) for q in data.get("queued") or ()],
        )


@dataclass(frozen=True, slots=True)
class GraphInfo:
    """A graph or agent the server offers; ``edges`` and ``mermaid`` come with ``graph(name)``."""

    name: str
    kind: str = "graph"
    ref: str | None = None
    version: str | None = None
    versions: list[str] = field(default_factory=list)
    nodes: list[Any] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    mermaid: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphInfo:
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind") or "graph"),
            ref=data.get("ref"),
            version=data.get("version"),
            versions=list(data.get("versions") or ()),
            nodes=list(data.get("nodes") or ()),
            edges=list(data.get("edges") or ()),
            mermaid=data.get("mermaid"),
        )


@dataclass(frozen=True, slots=True)
class StateAt:
    """A run's state as of one sequence number (the runtime's ``StateView``)."""

    run_id: str
    seq: int
    status: RunStatus
    state: Any
    next: list[str] = field(default_factory=list)
    step: int | None = None
    interrupts: list[Interrupt] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateAt:
        return cls(
            run_id=str(data["run_id"]),
            seq=int(data.get("seq") or 0),
            status=RunStatus(data["status"]),
            state=data.get("state", data.get("values")),
            next=list(data.get("next") or ()),
            step=data.get("step"),
            interrupts=[Interrupt.from_json(i) for i in data.get("interrupts") or ()],
        )


@dataclass(frozen=True, slots=True)
class Replay:
    """A replay's report: ``ok``, or where the replay first did something else."""

    run_id: str
    ok: bool
    compared: int | None = None
    divergence: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str) -> Replay:
        divergence = data.get("divergence")
        return cls(
            run_id=str(data.get("run_id") or run_id),
            ok=bool(data.get("ok")),
            compared=data.get("compared"),
            divergence=divergence if isinstance(divergence, dict) else None,
        )


def event_from_json(data: dict[str, Any]) -> Event:
    """A journal event (or a live ``model_delta``) from ``Event.to_json()``'s shape."""
    try:
        kind = EventKind(data["kind"])
        run_id, seq, ts = str(data["run_id"]), int(data["seq"]), float(data["ts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"not a Mainspring event: {exc!r} in {data!r:.200}") from None
    fields = data.get("data") or {}
    if kind is EventKind.MODEL_DELTA:  # live only: not among the journal's kinds
        try:
            delta = msgspec.convert(fields, ModelDelta, strict=False)
        except msgspec.ValidationError as exc:
            raise SerializationError(f"model_delta event data does not fit: {exc}") from None
        return Event(run_id, seq, kind, ts, delta)
    return make_event(run_id, seq, kind, ts, fields)
