"""The API's request and response models (docs/server.md, "Objects" and "Endpoints").

Pydantic models, so the OpenAPI document says exactly what each route takes and
returns; the routes build their answers with ``views.py`` and these models check them.
Requests forbid unknown fields (a typo is a 422 naming the field, not ignored).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from .depth import MAX_JSON_DEPTH, check_json_depth, too_deep

RunStatusName = Literal["running", "interrupted", "finished", "failed", "cancelled"]
Multitask = Literal["reject", "enqueue", "interrupt", "rollback"]

#: Ids chosen by clients (run ids, thread ids): printable, no slashes (they sit in paths).
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@~-]+$")]
Timeout = Annotated[float, Field(gt=0, le=3600)]
#: A sequence number a client gives (``after``, ``at``): bounded so sums stay in 64 bits
#: (and exact in every JSON reader: JavaScript's largest safe integer).
MAX_SEQ = 2**53 - 1
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
#: A time a client gives (Unix seconds): finite, and before the year 5138.
MAX_TIME = 1e11
#: A JSON value a client gives: nested at most ``MAX_JSON_DEPTH`` levels (else a 422).
JsonValue = Annotated[Any, AfterValidator(check_json_depth)]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_depth)]
#: A run queue's name (``Runtime.start(queue=...)``): no ':' (it separates notifications).
QueueName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^:]+$")]
MAX_DELAY = 366 * 86400.0  # a year: a delayed start further off is a mistake


def refuse_deep_json(value: Any, field: str) -> None:
    """A 422 naming ``field`` if ``value`` (JSON data or a pydantic model, such as a
    protocol's request body) nests deeper than ``MAX_JSON_DEPTH`` levels."""
    if too_deep(value):
        from .errors import ApiError  # here: errors.py imports the catalog, this is a leaf

        raise ApiError(
            422,
            "invalid_request",
            f"invalid request: {field}: nested deeper than {MAX_JSON_DEPTH} levels; "
            "flatten the value",
            problems=[{"at": field, "problem": f"nested deeper than {MAX_JSON_DEPTH} levels"}],
        )


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: its error statuses, each with the one error shape."""
    return {s: {"model": ErrorBody, "description": _WHY.get(s, "error")} for s in statuses}


_WHY = {
    400: "bad request",
    401: "no valid API key",
    403: "the key lacks the scope, or acts for another tenant",
    404: "not found (or another tenant's)",
    409: "conflict with the run's or thread's state",
    413: "request body too large",
    422: "invalid request: the details name the field",
    429: "rate limited",
    503: "the store is unavailable",
}

#: What every authenticated route may answer besides its own errors.
AUTH = (400, 401, 403, 413, 422, 429, 503)


# -- objects -----------------------------------------------------------------------------


class RunQueue(BaseModel):
    """Where a queued run waits for a worker (docs/server.md, "Queue mode")."""

    name: str
    priority: int
    available_at: float | None = Field(description="no worker starts it before (a delay)")
    concurrency_key: str | None
    waiting: bool = Field(description="running, and no worker holds it yet")


class Run(BaseModel):
    run_id: str
    graph: str
    version: str | None = Field(description="the graph's fingerprint the run started with")
    thread: str | None
    status: RunStatusName
    tenant: str
    created_at: float
    updated_at: float
    last_seq: int
    parent_run_id: str | None
    durability: Literal["sync", "batch", "off"]
    error: str | None
    metadata: dict[str, Any]
    queue: RunQueue | None = Field(
        default=None, description="the run queue whose workers drive it (null: none)"
    )


class PendingInterrupt(BaseModel):
    interrupt_id: str
    node: str
    payload: Any = None


class Outcome(BaseModel):
    status: RunStatusName
    state: Any = None
    seq: int
    interrupts: list[PendingInterrupt]
    error: dict[str, Any] | None = None


class Usage(BaseModel):
    """What the run's model calls reported using, summed from its ``effect_finished`` events."""

    model_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float | None = Field(description="null if no call reported a cost")


class RunDetail(Run):
    outcome: Outcome | None = Field(
        default=None,
        description="where the run stands (null if this server does not serve its graph)",
    )
    usage: Usage | None = Field(
        default=None, description="GET /v1/runs/{id} only: the model calls' usage so far"
    )


class QueuedRun(BaseModel):
    """A run accepted on a busy thread (``multitask: enqueue``), not started yet."""

    run_id: str
    graph: str
    thread: str
    tenant: str
    status: Literal["queued", "failed"] = Field(
        "queued", description="failed: its turn came but it could not start (see error)"
    )
    after: str = Field(description="the run (or queued run) it starts after")
    queued_at: float
    error: str | None = Field(None, description="why it could not start (status failed)")


class RunList(BaseModel):
    runs: list[Run]
    next_offset: int | None = Field(description="offset paging: the next page's offset")
    next_cursor: str | None = Field(
        description="the next page: pass it as cursor= (no repeats while runs start)"
    )


class Interrupt(BaseModel):
    run_id: str
    interrupt_id: str
    node: str
    payload: Any = None
    graph: str
    thread: str | None
    tenant: str
    since: float


class InterruptList(BaseModel):
    interrupts: list[Interrupt]


class Event(BaseModel):
    run_id: str
    seq: int
    kind: str
    ts: float
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event]
    last_seq: int = Field(description="the seq of the last event of this page (or `after`)")
    more: bool


class StateAt(BaseModel):
    run_id: str
    seq: int
    step: int
    status: RunStatusName
    state: Any = None
    next: list[str]
    interrupts: list[PendingInterrupt]


class Trace(BaseModel):
    run_id: str | None
    trace_id: str | None
    spans: list[dict[str, Any]]


class Divergence(BaseModel):
    seq: int
    expected: str
    actual: str


class ReplayReport(BaseModel):
    run_id: str
    ok: bool
    compared: int
    divergence: Divergence | None


class Thread(BaseModel):
    thread: str
    tenant: str
    runs: int
    last_run_id: str
    last_status: RunStatusName
    updated_at: float


class ThreadList(BaseModel):
    threads: list[Thread]


class ThreadDetail(BaseModel):
    thread: str
    tenant: str
    runs: list[Run] = Field(description="the thread's runs, newest first")
    open_run_id: str | None = Field(description="the run still going or parked, if any")
    queued: list[QueuedRun] = Field(description="runs enqueued behind it, in order")


class Edge(BaseModel):
    source: str
    target: str
    kind: Literal["edge", "branch"]


class GraphSummary(BaseModel):
    name: str
    kind: Literal["graph", "agent"]
    ref: str | None
    version: str
    versions: list[str]
    nodes: list[str]


class GraphList(BaseModel):
    graphs: list[GraphSummary]


class GraphDetail(GraphSummary):
    edges: list[Edge]
    mermaid: str


class Me(BaseModel):
    key_id: str
    tenant: str
    scopes: list[str]


class Health(BaseModel):
    status: str
    reason: str | None = None


# -- requests ----------------------------------------------------------------------------


class NewMessage(_Request):
    """A run started on a thread (``POST /v1/threads/{thread}/runs``)."""

    graph: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=200)
    input: JsonValue = None
    run_id: Id | None = None
    metadata: JsonObject | None = None
    wait: bool = False
    timeout: Timeout = 60.0
    multitask: Multitask = "reject"
    tenant: str | None = Field(
        default=None, max_length=200, description="operator keys only: the tenant the run is for"
    )
    queue: QueueName | None = Field(
        default=None,
        description="the run queue a worker takes the run from (PostgreSQL store; default: "
        "the server's --queue, else this server drives the run)",
    )
    priority: int = Field(
        default=0, ge=-(2**31) + 1, le=2**31 - 1, description="queued runs: higher starts first"
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY,
        description="queued runs: seconds before a worker may start it",
    )
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="queued runs: runs sharing a key count against the queue's per-key limit",
    )

    @field_validator("metadata")
    @classmethod
    def _tenant_is_a_name(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        tenant = (metadata or {}).get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise ValueError(
                f"metadata.tenant is {tenant!r}; a tenant is named by a string (or give "
                "`tenant` in the body, operator keys only)"
            )
        return metadata


class StartRun(NewMessage):
    thread: Id | None = None


class CancelRequest(_Request):
    reason: str | None = Field(default=None, max_length=2000)


class ResumeRequest(_Request):
    value: JsonValue = None
    interrupt_id: str | None = Field(default=None, max_length=200)
    values: JsonObject | None = None
    wait: bool = False
    timeout: Timeout = 60.0

    def both_ways(self) -> bool:
        """``value`` (or ``interrupt_id``) and ``values`` both given: one would be dropped
        (a 422, answered after the run is found: another tenant's run is 404 first)."""
        return self.values is not None and bool({"value", "interrupt_id"} & self.model_fields_set)


class ForkRequest(_Request):
    at: int | None = Field(default=None, ge=1, le=MAX_SEQ)
    new_run_id: Id | None = None
    thread: Id | None = None
    effects: Literal["rerun", "reuse"] | None = None


class ApproveRequest(_Request):
    comment: str | None = Field(default=None, max_length=2000)
    wait: bool = False
    timeout: Timeout = 60.0


class RejectRequest(_Request):
    reason: str | None = Field(default=None, max_length=2000)
    wait: bool = False
    timeout: Timeout = 60.0


class EditRequest(_Request):
    args: JsonObject
    wait: bool = False
    timeout: Timeout = 60.0
