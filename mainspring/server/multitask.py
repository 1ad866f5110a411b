"""Double texting: a new message on a thread whose run is still going (docs/server.md).

A thread's *open* run is its newest top-level run that is running or parked on an
interrupt; runs enqueued behind it count as open too. A start on a busy thread does what
its request's ``multitask`` says:

* ``reject``: 409 ``thread_busy`` naming the open run; nothing starts.
* ``enqueue``: 202; a task of the server's task group waits for the open run (and the runs
  queued before it) to end (finished, failed or cancelled: a park is not an end), then
  starts it. The queued start is kept in the store (``pending/``, ``thread_queues.py``): a
  server that stops leaves it to the next server on the store (or another one on the same
  PostgreSQL store), which starts it, once, when its turn comes.
* ``interrupt``: the open run is cancelled (its journal kept; the ``cancelled`` event names
  ``interrupted by run <new id>``), runs queued behind it are dropped, then the new run
  starts. An agent's new run goes on from the cancelled run's conversation as it stood
  (cut after its last complete exchange: no tool call left without its answer).
* ``rollback``: as ``interrupt``, but the thread goes on as if the cancelled run had not
  happened: an agent's new run starts from the thread's last *finished* run. The journal
  is append-only, so the mark is on the new run (``metadata.multitask.rolled_back``) and
  in the cancelled run's ``cancelled`` event (``rolled back by run <new id>``).

A graph's runs (not an agent's) each start from their own input: for them ``interrupt``
and ``rollback`` differ only in the marks. A start and the look at the thread are one
step per thread (``thread_locks.py``: in every server sharing a PostgreSQL store), so two
requests cannot both find the thread free; the chat endpoints and forks go through the
same step (``check_free``). A queued run's id is taken (``reserved``) until it starts; one
that cannot start when its turn comes is kept, with its error, for ``GET /v1/threads/{t}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from ..agents.running import prepare
from ..agents.state import message_dicts, tool_calls_of
from ..engine.handle import RunHandle
from ..engine.tenancy import TenantRuntime
from ..errors import MainspringError, RunStateError
from ..graph.compiled import CompiledGraph
from ..status import RunStatus
from ..store import RunRecord
from .auth import Caller
from .catalog import CatalogEntry
from .context import ServerState
from .errors import ApiError
from .pending import PendingStart, pending_starts_for
from .queued import options_of, placed
from .schemas import StartRun
from .starting import (
    BAD_INPUT,
    Started,
    answer,
    begin,
    check_repeat,
    existing,
    resolve,
    start_view,
)
from .thread_locks import PostgresThreadLocks, thread_locks_for
from .thread_queues import Go, Queued, ThreadQueues, UntilEnded

log = logging.getLogger("mainspring.server")

OPEN = (RunStatus.RUNNING, RunStatus.INTERRUPTED)


def queues_of(state: ServerState) -> ThreadQueues:
    queues: ThreadQueues | None = state.extras.get("thread_queues")
    if queues is None:
        store = state.runtime.store
        locks = thread_locks_for(store)
        shared = isinstance(locks, PostgresThreadLocks)  # other servers may share the store
        queues = ThreadQueues(locks, pending_starts_for(store), shared=shared)
        queues.restorer = partial(_restored, state)
        state.extras["thread_queues"] = queues
    return queues


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The server's lifespan part (merged in by the runs router): the queue's task group."""
    async with queues_of(app.state.mainspring).running():
        yield


async def open_run(view: TenantRuntime, thread: str) -> RunRecord | None:
    """The thread's newest top-level run still running or parked, if any."""
    for record in await view.list_runs(thread=thread, status=list(OPEN), limit=20):
        if record.parent_run_id is None:
            return record
    return None


async def start_run(state: ServerState, caller: Caller, body: StartRun) -> Started:
    """``POST /v1/runs``: see the module docstring and docs/server.md. The look at the
    thread and the start are made under the thread's lock; the wait (``wait``) outside it."""
    view = start_view(caller, state, body)
    entry, graph = resolve(state, body)
    body = placed(state, body)  # its queue settled and checked (queue mode: queued.py)
    queues = queues_of(state)
    if body.thread is None:
        reserved(queues, body.run_id, view.tenant)  # a queued run's id is taken
        status, handle = await _start(view, entry, graph, body)
    else:
        async with queues.locked(view.tenant, body.thread):
            started = await _on_thread(caller, queues, view, entry, graph, body)
        if isinstance(started, Started):
            return started
        status, handle = started
    version = graph.fingerprint if status == 201 else None  # a repeat's: as it started
    return Started(status, await answer(view, state, handle, body.wait, body.timeout, version))


def reserved(queues: ThreadQueues, run_id: str | None, tenant: str) -> None:
    """409 ``run_exists`` if ``run_id`` names a queued run (not started yet, but taken)."""
    item = queues.reserved(run_id) if run_id is not None else None
    if item is None:
        return
    where = f" on thread {item.thread!r} (graph {item.graph!r})" if item.tenant == tenant else ""
    raise ApiError(
        409,
        "run_exists",
        f"run id {run_id!r} is taken by a queued run{where}; choose another run_id, or "
        "repeat the original request",
    )


def blocker_of(queues: ThreadQueues, tenant: str, busy: RunRecord | None, thread: str) -> str:
    """What a new run on the thread would wait for: its last queued run, else its open run."""
    waiting = queues.queued(tenant, thread)
    return waiting[-1].run_id if waiting else busy.run_id if busy else ""


async def check_free(queues: ThreadQueues, view: TenantRuntime, thread: str, hint: str) -> None:
    """409 ``thread_busy`` if the thread has an open run or a queued one (call it under
    ``queues.locked``: the start that follows is then the thread's only one)."""
    blocker = blocker_of(queues, view.tenant, await open_run(view, thread), thread)
    if blocker:
        raise ApiError(
            409,
            "thread_busy",
            f"thread {thread!r} has run {blocker!r} still going; {hint}",
            open_run_id=blocker,
        )


async def _start(
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
    marked: dict[str, Any] | None = None,
) -> tuple[int, RunHandle]:
    """A new run (201), or the run a repeated request made (200). A graph's repeat is checked
    by the runtime (same input too); an agent's input is the thread's history plus the
    message, which has moved on since, so its graph and thread are compared."""
    repeat = await existing(view, body)
    if repeat is not None:
        check_repeat(repeat, body)
        if entry.kind == "agent":
            return 200, view.handle(repeat.run_id)
        return 200, await begin(view, entry, graph, body, body.input, body.metadata)
    metadata = marked if marked is not None else body.metadata
    return 201, await begin(view, entry, graph, body, body.input, metadata)


async def _on_thread(
    caller: Caller,
    queues: ThreadQueues,
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
) -> tuple[int, RunHandle] | Started:
    assert body.thread is not None
    item = queues.reserved(body.run_id) if body.run_id is not None else None
    if item is not None:
        if (item.tenant, item.thread, item.graph, item.input) != (
            view.tenant,
            body.thread,
            entry.name,
            body.input,
        ):
            reserved(queues, body.run_id, view.tenant)  # another request with its id: 409
        return Started(202, item.to_json())  # the same request again, still queued
    if await existing(view, body) is not None:
        return await _start(view, entry, graph, body)
    busy = await open_run(view, body.thread)
    blocker = blocker_of(queues, view.tenant, busy, body.thread)
    if not blocker:
        return await _start(view, entry, graph, body)
    body = body.model_copy(update={"run_id": body.run_id or uuid.uuid4().hex})
    if body.multitask == "reject":
        raise ApiError(
            409,
            "thread_busy",
            f"thread {body.thread!r} has run {blocker!r} still going; wait for it, cancel "
            "it, or send multitask 'enqueue', 'interrupt' or 'rollback'",
            open_run_id=blocker,
        )
    if body.multitask == "enqueue":
        return await _enqueue(queues, view, entry, graph, body, blocker)
    return await _replace(caller, queues, view, entry, graph, body, busy)


async def _enqueue(
    queues: ThreadQueues,
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
    blocker: str,
) -> Started:
    assert body.thread is not None and body.run_id is not None
    try:  # a bad input is the request's 422 now, not a log line when its turn comes
        message_dicts(body.input) if entry.kind == "agent" else graph.schema.initial(body.input)
    except BAD_INPUT as exc:
        raise ApiError(
            422, "invalid_input", f"the input does not fit {body.graph!r}: {exc}"
        ) from None
    item = Queued(
        body.run_id, entry.name, body.thread, view.tenant, blocker, time.time(), body.input,
        body.model_dump(mode="json", exclude_unset=False),
    )  # fmt: skip
    await queues.enqueue(item, *_turn(view, entry, graph, body, blocker))
    return Started(202, item.to_json())


def _turn(
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
    blocker: str,
) -> tuple[UntilEnded, Go]:
    """How a queued run waits for its turn, and starts (or names what it waits for now)."""
    metadata = _marked(body.metadata, {"strategy": "enqueue", "after": blocker})

    async def until_ended(run_id: str) -> None:
        with suppress(MainspringError):  # it ended, or never started
            await view.handle(run_id).result()

    async def go() -> str | None:
        assert body.thread is not None
        if _started_already(await existing(view, body), body):
            return None  # by another server, or before a server stopped
        busy = await open_run(view, body.thread)  # another server's start, since?
        if busy is not None:
            return busy.run_id
        await begin(view, entry, graph, body, body.input, metadata)
        return None

    return until_ended, go


def _started_already(record: RunRecord | None, body: StartRun) -> bool:
    """Whether ``record`` (the run with the queued run's id) is that queued run, started."""
    if record is None or (record.graph, record.thread) != (body.graph, body.thread):
        return False
    mark = (record.metadata or {}).get("multitask")
    return isinstance(mark, dict) and mark.get("strategy") == "enqueue"


def _restored(state: ServerState, row: PendingStart) -> tuple[Queued, UntilEnded, Go] | None:
    """A pending start from the store as this server's queued run (None: it names a graph
    this server does not serve; a server that does takes it up)."""
    try:
        body = StartRun.model_validate(row.request)
        entry, graph = resolve(state, body)
    except (ApiError, ValueError, MainspringError) as exc:
        log.warning("pending start %s is not this server's to start: %s", row.run_id, exc)
        return None
    view = state.runtime.tenant(row.tenant)
    item = Queued(
        row.run_id, row.graph, row.thread, row.tenant, row.after, row.queued_at, body.input,
        row.request,
    )  # fmt: skip
    return (item, *_turn(view, entry, graph, body, row.after))


async def _replace(
    caller: Caller,
    queues: ThreadQueues,
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
    busy: RunRecord | None,
) -> tuple[int, RunHandle]:
    """``interrupt`` and ``rollback``: cancel the open run (and drop what was queued behind
    it), then start the new one."""
    assert body.run_id is not None and body.thread is not None
    rollback = body.multitask == "rollback"
    dropped = await queues.drop(view.tenant, body.thread)
    mark: dict[str, Any] = {"strategy": body.multitask}
    if dropped:
        mark["dropped"] = dropped
    carried: list[dict[str, Any]] | None = None
    if busy is not None:
        verb = "rolled back" if rollback else "interrupted"
        actor = f"{caller.principal.key_id}: {verb} by run {body.run_id}"
        try:
            await view.cancel(busy.run_id, actor=actor)
        except RunStateError:  # it ended meanwhile (fine), or another process drives it
            if (await view.get_run(busy.run_id)).status in OPEN:
                raise
        mark["rolled_back" if rollback else "interrupted"] = busy.run_id
        if entry.kind == "agent" and not rollback and busy.graph == entry.name:
            carried = await _carried(view, entry, busy.run_id, body.input)
    metadata = _marked(body.metadata, mark)
    if carried is None:
        return await _start(view, entry, graph, body, metadata)
    prepare(entry.agent, view)  # an agent going on from the interrupted conversation
    handle = await view.start(
        graph,
        {"messages": carried},
        run_id=body.run_id,
        thread=body.thread,
        metadata=metadata,
        **options_of(body),
    )
    return 201, handle


async def _carried(
    view: TenantRuntime, entry: CatalogEntry, run_id: str, input: Any
) -> list[dict[str, Any]]:
    """The interrupted run's conversation, cut after its last complete exchange, then the
    new message."""
    try:
        new = message_dicts(input)
    except BAD_INPUT as exc:
        raise ApiError(422, "invalid_input", f"the input is not a message: {exc}") from None
    stood = await view.state(run_id, graph=entry.agent.graph)
    values = stood.values if isinstance(stood.values, Mapping) else {}
    return [*complete_prefix(list(values.get("messages") or ())), *new]


def complete_prefix(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` up to the last point where every tool call has its answer."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    for i in range(len(messages) - 1, -1, -1):
        calls = tool_calls_of(messages[i])
        if any(c.get("id") not in answered for c in calls):
            return messages[:i]
    return messages


def _marked(metadata: dict[str, Any] | None, mark: dict[str, Any]) -> dict[str, Any]:
    return {**(metadata or {}), "multitask": mark}
