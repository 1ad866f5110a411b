"""Queue mode: the runs the API starts wait in a run queue for workers to drive them.

``ServerConfig(queue=...)`` (``mainspring serve --queue NAME``) names the queue every
start goes to; a start's body may name another (``queue``) and place the run in it
(``priority``, ``delay``, ``concurrency_key``). The engine does the rest: a queued run is
written to the journal and left to the workers; its resumes and approvals go back to its
queue, a cancel asks the worker driving it, and waits follow the journal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from ..engine.queueing import QueueOptions, has_queues, placement
from ..errors import RunStateError, StoreError
from .errors import ApiError
from .schemas import NewMessage

if TYPE_CHECKING:
    from ..store import Store
    from .context import ServerState

B = TypeVar("B", bound=NewMessage)


def check_server_queue(store: Store, queue: str | None) -> None:
    """At ``create_app``: a server queue needs a store with queues (PostgreSQL)."""
    if queue is None:
        return
    if not has_queues(store):
        raise ValueError(
            f"--queue {queue} (ServerConfig.queue): the {type(store).__name__} has no run "
            "queues; serve on PostgreSQL (--store postgresql://...), where `mainspring worker` "
            "processes drive queued runs, or serve without --queue (the server then drives "
            "its runs itself)"
        )
    from ..store._pg_queue import check_queue_name  # PostgreSQL's module: loaded when used

    try:
        check_queue_name(queue)
    except StoreError as exc:
        raise ValueError(f"--queue (ServerConfig.queue): {exc}") from None


def queue_options(state: ServerState) -> QueueOptions:
    """The queue keywords of a start with no body of its own (the chat endpoints): the
    server's queue, if it has one."""
    return {"queue": state.config.queue} if state.config.queue is not None else {}


def placed(state: ServerState, body: B) -> B:
    """``body`` with its queue settled: its own, else the server's (None: the server drives
    the run), its placement checked. A 422 says what to fix."""
    queue = body.queue if body.queue is not None else state.config.queue
    if queue is None:
        if body.priority != 0 or body.delay is not None or body.concurrency_key is not None:
            raise ApiError(
                422,
                "invalid_request",
                "priority, delay and concurrency_key place a run in a run queue: give "
                "'queue' too (or serve with --queue NAME)",
            )
        return body
    try:
        placement(state.runtime.store, queue, body.priority, body.delay, body.concurrency_key)
    except RunStateError as exc:
        raise ApiError(422, "invalid_request", f"queue: {exc}") from None
    return body if body.queue == queue else body.model_copy(update={"queue": queue})


def options_of(body: NewMessage) -> QueueOptions:
    """``Runtime.start``'s queue keywords for a body ``placed`` settled."""
    if body.queue is None:
        return {}
    return {
        "queue": body.queue,
        "priority": body.priority,
        "delay": body.delay,
        "concurrency_key": body.concurrency_key,
    }
