"""``AsyncClient``: the runtime's API over HTTP (docs/server.md), on ``httpx.AsyncClient``.

Its methods mirror the Runtime's (``start``, ``run``, ``get_run``, ``list_runs``,
``state``, ``events``, ``resume``, ``cancel``, ``fork``, ``replay``) plus what only a
server has (approvals by interrupt, graphs by name); it returns the typed values of
``models.py`` and raises the exceptions of ``errors.py``. The sync ``Client`` runs this
same code through one blocking portal (``sync.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import anyio

from ..errors import RunCancelledError, RunFailedError, RunNotFoundError
from ..events import Event, EventKind
from ..status import RunStatus
from ._base import DEFAULT_SERVER, ClientBase
from ._base import q as _q
from .models import (
    GraphInfo,
    Interrupt,
    Outcome,
    QueuedRun,
    Replay,
    Run,
    StateAt,
    Thread,
    ThreadDetail,
    event_from_json,
    run_or_queued,
)
from .stream import RunStream

__all__ = ["DEFAULT_SERVER", "AsyncClient", "ForkEffects", "Multitask"]

Multitask = Literal["reject", "enqueue", "interrupt", "rollback"]
ForkEffects = Literal["rerun", "reuse"]


class AsyncClient(ClientBase):
    """A Mainspring server's API: ``async with AsyncClient("http://host:8000") as ms: ...``.

    ``base_url`` defaults to ``$MAINSPRING_SERVER`` (else ``http://127.0.0.1:8000``),
    ``api_key`` to ``$MAINSPRING_API_KEY`` (sent as ``Authorization: Bearer``; none for a
    ``--no-auth`` server). ``timeout`` is per request (a ``wait=True`` request gets its own
    ``timeout`` plus this); ``reconnect`` is how streams retry; ``rate_retries`` how often
    a request refused for its rate (429) is sent again after the server's ``Retry-After``.
    ``transport`` goes to httpx (e.g. an ``httpx.ASGITransport`` to call an app in-process).
    """

    # -- who, what ---------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        """The key in use: ``{"key_id", "tenant", "scopes"}``."""
        found: dict[str, Any] = await self._call("GET", "/v1/me")
        return found

    async def ready(self) -> bool:
        """Whether the server's runtime is open and its store answers."""
        try:
            await self._call("GET", "/readyz")
        except Exception:  # unreachable, 503: not ready, whatever the reason
            return False
        return True

    async def graphs(self) -> list[GraphInfo]:
        body = await self._call("GET", "/v1/graphs")
        return [GraphInfo.from_json(g) for g in body["graphs"]]

    async def graph(self, name: str, *, version: str | None = None) -> GraphInfo:
        return GraphInfo.from_json(
            await self._call("GET", f"/v1/graphs/{_q(name)}", params={"version": version})
        )

    # -- starting ----------------------------------------------------------------------

    async def start(
        self,
        graph: str,
        input: Any = None,
        *,
        thread: str | None = None,
        run_id: str | None = None,
        version: str | None = None,
        metadata: dict[str, Any] | None = None,
        wait: bool = False,
        timeout: float | None = None,
        multitask: Multitask | None = None,
        tenant: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        concurrency_key: str | None = None,
    ) -> Run | QueuedRun:
        """Start a run of the served graph ``graph``; idempotent by ``run_id``.

        With ``wait``, the answer carries the run's ``outcome`` once it stops moving
        (finished, failed, cancelled or parked) or ``timeout`` seconds pass (the server's
        default 60). ``multitask`` says what to do when ``thread`` has an open run:
        ``reject`` (ThreadBusyError), ``enqueue`` (a :class:`QueuedRun` is returned: the run
        starts when the open one ends), ``interrupt`` or ``rollback``. ``queue`` (and its
        ``priority``, ``delay`` seconds, ``concurrency_key``): the run queue whose workers
        drive the run (a PostgreSQL store; default: the server's ``--queue``, if any).
        """
        body: dict[str, Any] = {"graph": graph, "input": input}
        optional = {"thread": thread, "run_id": run_id, "version": version,
                    "metadata": metadata, "timeout": timeout, "multitask": multitask,
                    "tenant": tenant, "queue": queue, "priority": priority, "delay": delay,
                    "concurrency_key": concurrency_key}  # fmt: skip
        body.update({k: v for k, v in optional.items() if v is not None})
        if wait:
            body["wait"] = True
        answer = await self._call(
            "POST", "/v1/runs", json=body, timeout=self._wait_timeout(wait, timeout)
        )
        return run_or_queued(answer)

    async def run(
        self,
        graph: str,
        input: Any = None,
        *,
        thread: str | None = None,
        run_id: str | None = None,
        version: str | None = None,
        metadata: dict[str, Any] | None = None,
        multitask: Multitask | None = None,
        tenant: str | None = None,
    ) -> Any:
        """Run to the end and return the final state, as ``Runtime.run`` does.

        A run that parks on an interrupt is waited for until someone resumes it and it
        ends; raises RunFailedError or RunCancelledError if it ends that way.
        """
        run = await self.start(
            graph, input, thread=thread, run_id=run_id, version=version, metadata=metadata,
            wait=True, multitask=multitask, tenant=tenant,
        )  # fmt: skip
        if isinstance(run, QueuedRun):
            run = await self._started(run)
        outcome = await self._final(run)
        if outcome.status is RunStatus.FAILED:
            raise RunFailedError(run.run_id, outcome.error or {})
        if outcome.status is RunStatus.CANCELLED:
            raise RunCancelledError(f"run {run.run_id!r} was cancelled")
        return outcome.state

    async def _started(self, queued: QueuedRun) -> Run:
        """The queued run once it started (looked up with backoff: the API has no event
        for a queued run's start)."""
        delay = 0.05
        while True:
            try:
                return await self.get_run(queued.run_id)
            except RunNotFoundError:
                await anyio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _final(self, run: Run) -> Outcome:
        """The run's outcome once it ended: followed on its stream (across parks) if need be."""
        outcome = run.outcome
        if outcome is not None and outcome.status.terminal:
            return outcome
        after = outcome.seq if outcome is not None else run.last_seq
        async with self.stream(run.run_id, after=after) as events:
            async for _ in events:
                pass
        final = (await self.get_run(run.run_id)).outcome
        assert final is not None, "GET /v1/runs/{id} answers with the run's outcome"
        return final

    async def wait(self, run_id: str, *, until: Literal["park", "end"] = "park") -> Outcome:
        """Wait until the run stops moving (``park``: finished, failed, cancelled or parked;
        ``end``: finished, failed or cancelled) and return its outcome."""
        run = await self.get_run(run_id)
        outcome = run.outcome
        stopped = run.status is not RunStatus.RUNNING if until == "park" else run.status.terminal
        if outcome is not None and stopped:
            return outcome
        stream = self.stream(run_id, after=run.last_seq, until="park" if until == "park" else None)
        async with stream:
            async for _ in stream:
                pass
        outcome = (await self.get_run(run_id)).outcome
        assert outcome is not None, "GET /v1/runs/{id} answers with the run's outcome"
        return outcome

    # -- reading -------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run, with its ``outcome`` (where it stands now)."""
        return Run.from_json(await self._call("GET", f"/v1/runs/{_q(run_id)}"))

    async def list_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        graph: str | None = None,
        thread: str | None = None,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Run]:
        """One page of runs matching every filter given, newest first (``iter_runs``: all)."""
        body = await self._runs_page(
            status, graph, thread, tenant, created_after, created_before, limit, offset=offset
        )
        return [Run.from_json(r) for r in body["runs"]]

    async def iter_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        graph: str | None = None,
        thread: str | None = None,
        tenant: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        page: int = 100,
    ) -> AsyncIterator[Run]:
        """Every run matching the filters, newest first, a page at a time (each page after
        the last one's cursor: runs starting meanwhile are neither repeated nor skip one)."""
        cursor: str | None = None
        while True:
            body = await self._runs_page(
                status, graph, thread, tenant, created_after, created_before, page, cursor=cursor
            )
            for run in body["runs"]:
                yield Run.from_json(run)
            cursor = body.get("next_cursor")
            if cursor is None:
                return

    async def _runs_page(
        self,
        status: RunStatus | str | Sequence[RunStatus | str] | None,
        graph: str | None,
        thread: str | None,
        tenant: str | None,
        created_after: float | None,
        created_before: float | None,
        limit: int,
        *,
        offset: int = 0,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        statuses = (
            None if status is None
            else [str(status)] if isinstance(status, str)
            else [str(s) for s in status]
        )  # fmt: skip
        params = {"status": statuses, "graph": graph, "thread": thread, "tenant": tenant,
                  "created_after": created_after, "created_before": created_before,
                  "limit": limit, "offset": offset or None, "cursor": cursor}  # fmt: skip
        body: dict[str, Any] = await self._call("GET", "/v1/runs", params=params)
        return body

    async def list_threads(self, *, limit: int = 100) -> list[Thread]:
        body = await self._call("GET", "/v1/threads", params={"limit": limit})
        return [Thread.from_json(t) for t in body["threads"]]

    async def thread(self, thread: str, *, tenant: str | None = None) -> ThreadDetail:
        """A thread: its runs (newest first), its open run and the runs queued behind it
        (``tenant``: which tenant's, for an operator's key)."""
        path = f"/v1/threads/{_q(thread)}"
        return ThreadDetail.from_json(await self._call("GET", path, params={"tenant": tenant}))

    async def state(self, run_id: str, *, at: int | None = None) -> StateAt:
        """The run's state as of sequence number ``at`` (default: now)."""
        return StateAt.from_json(
            await self._call("GET", f"/v1/runs/{_q(run_id)}/state", params={"at": at})
        )

    async def events(
        self,
        run_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
        kinds: Sequence[EventKind | str] | None = None,
    ) -> list[Event]:
        """The run's journal after ``after``: all of it (page by page), or the events up to
        seq ``after + limit``; ``kinds``: those kinds only (e.g. ``effect_decided``)."""
        found: list[Event] = []
        end = None if limit is None else after + limit
        kind = None if kinds is None else [str(k) for k in kinds]
        while True:
            page = 500 if end is None else min(500, end - after)
            params = {"after": after, "limit": page, "kind": kind}
            body = await self._call("GET", f"/v1/runs/{_q(run_id)}/events", params=params)
            found.extend(event_from_json(e) for e in body["events"])
            last = int(body.get("last_seq") or after)
            if not body.get("more") or last <= after or (end is not None and last >= end):
                return found
            after = last

    def stream(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = False,
        until: Literal["park"] | None = None,
    ) -> RunStream:
        """The run's events after ``after``, then live ones until it ends (``until="park"``:
        or parks); resumed after disconnects with none lost or twice (``stream.py``).
        ``tokens``: a model's tokens as ``model_delta`` events too."""
        return RunStream(
            self._http, run_id, after=after, tokens=tokens, until=until, reconnect=self.reconnect
        )

    async def interrupts(
        self, *, graph: str | None = None, thread: str | None = None, limit: int | None = None
    ) -> list[Interrupt]:
        """Interrupts waiting for an answer across runs, oldest first."""
        params = {"graph": graph, "thread": thread, "limit": limit}
        body = await self._call("GET", "/v1/interrupts", params=params)
        return [Interrupt.from_json(i) for i in body["interrupts"]]

    # -- acting on runs ------------------------------------------------------------------

    async def resume(
        self,
        run_id: str,
        value: Any = None,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Answer a parked run's interrupt with ``value`` (name it with ``interrupt_id`` when
        there are several, or answer several with ``values={id: value}``), or pick up a
        run a dead process left. With ``wait``, the answer carries the outcome."""
        body: dict[str, Any] = {"value": value}
        optional = {"interrupt_id": interrupt_id, "values": values, "timeout": timeout}
        body.update({k: v for k, v in optional.items() if v is not None})
        if wait:
            body["wait"] = True
        answer = await self._call(
            "POST",
            f"/v1/runs/{_q(run_id)}/resume",
            json=body,
            timeout=self._wait_timeout(wait, timeout),
        )
        return Run.from_json(answer)

    async def approve(
        self,
        run_id: str,
        interrupt_id: str,
        *,
        comment: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Resume the interrupt with ``true`` (a tool's approval runs the call)."""
        body = {"comment": comment}
        return await self._decide(run_id, interrupt_id, "approve", body, wait, timeout)

    async def reject(
        self,
        run_id: str,
        interrupt_id: str,
        *,
        reason: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Resume the interrupt with ``{"approve": false, "reason": ...}``."""
        body = {"reason": reason}
        return await self._decide(run_id, interrupt_id, "reject", body, wait, timeout)

    async def edit(
        self,
        run_id: str,
        interrupt_id: str,
        args: dict[str, Any],
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Resume the interrupt with ``{"args": args}`` (a tool's approval runs the edited call)."""
        return await self._decide(run_id, interrupt_id, "edit", {"args": args}, wait, timeout)

    async def _decide(
        self,
        run_id: str,
        interrupt_id: str,
        verb: str,
        body: dict[str, Any],
        wait: bool,
        timeout: float | None,
    ) -> Run:
        """An approval's answer; with ``wait``, the run's outcome once it stops moving."""
        path = f"/v1/runs/{_q(run_id)}/interrupts/{_q(interrupt_id)}/{verb}"
        sent = {k: v for k, v in {**body, "timeout": timeout}.items() if v is not None}
        if wait:
            sent["wait"] = True
        answer = await self._call(
            "POST", path, json=sent, timeout=self._wait_timeout(wait, timeout)
        )
        return Run.from_json(answer)

    async def cancel(self, run_id: str, *, reason: str | None = None) -> Run:
        """Cancel the run (its journal ends with ``cancelled``); the run after."""
        body = {} if reason is None else {"reason": reason}
        return Run.from_json(await self._call("POST", f"/v1/runs/{_q(run_id)}/cancel", json=body))

    async def fork(
        self,
        run_id: str,
        at: int | None = None,
        *,
        new_run_id: str | None = None,
        thread: str | None = None,
        effects: ForkEffects | None = None,
    ) -> Run:
        """Time travel: a new run from ``run_id``'s journal up to ``at`` (see Runtime.fork)."""
        body = {"at": at, "new_run_id": new_run_id, "thread": thread, "effects": effects}
        sent = {k: v for k, v in body.items() if v is not None}
        return Run.from_json(await self._call("POST", f"/v1/runs/{_q(run_id)}/fork", json=sent))

    async def replay(self, run_id: str) -> Replay:
        """Re-run against the recorded effects on the server; the first divergence, if any."""
        body = await self._call("POST", f"/v1/runs/{_q(run_id)}/replay", json={})
        return Replay.from_json(body, run_id)
