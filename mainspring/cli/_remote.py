"""``RemoteTarget``: the run commands against a server (``--server URL``), through the client.

Answers in the runtime's types (see ``_target.py``), so each command prints a remote run
with the same lines as a local one. The server holds the graphs, the models and the
tools: graphs are named as it serves them, and a command's ``--graph``/``--durability``
(which only a local store can use) are refused with what to do instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..client import AsyncClient, Interrupt, Outcome, Run, Thread
from ..engine import PendingInterrupt, RunOutcome
from ..engine.timetravel import Divergence, ForkEffects, ReplayReport, StateView
from ..events import Event
from ..graph import CompiledGraph
from ..status import Durability, RunStatus
from ..store import RunRecord, ThreadInfo
from ._common import CliError
from ._handle import GraphArg, Handle


def record_of(run: Run) -> RunRecord:
    """A run as the runtime's record. Its durability is the default (sync) unless the
    server says (the API's Run does not carry it yet)."""
    durability = run.durability
    return RunRecord(
        run_id=run.run_id,
        graph=run.graph,
        thread=run.thread,
        status=run.status,
        created_at=run.created_at,
        updated_at=run.updated_at,
        last_seq=run.last_seq,
        parent_run_id=run.parent_run_id,
        durability=Durability(durability) if durability in set(Durability) else Durability.SYNC,
        error=run.error,
        metadata=run.metadata,
    )


def pending_of(interrupts: list[Interrupt]) -> list[PendingInterrupt]:
    return [PendingInterrupt(i.interrupt_id, i.node, i.payload) for i in interrupts]


def outcome_of(run_id: str, outcome: Outcome) -> RunOutcome:
    return RunOutcome(
        run_id,
        outcome.status,
        outcome.state,
        outcome.seq,
        pending_of(outcome.interrupts),
        outcome.error,
    )


def thread_of(t: Thread) -> ThreadInfo:
    return ThreadInfo(t.thread, t.runs, t.last_run_id, t.last_status, t.updated_at, t.tenant)


class RemoteHandle:
    """A run on the server, followed on its event stream until it ends or parks."""

    def __init__(self, client: AsyncClient, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._stopped = False  # a stream of ours saw it end or park: its outcome is current

    @property
    def run_id(self) -> str:
        return self._run_id

    async def events(self, *, after: int = 0, deltas: bool = True) -> AsyncIterator[Event]:
        async with self._client.stream(
            self._run_id, after=after, tokens=deltas, until="park"
        ) as stream:
            async for event in stream:
                yield event
            self._stopped = stream.end is not None

    async def wait(self) -> RunOutcome:
        if self._stopped:
            outcome = (await self._client.get_run(self._run_id)).outcome
        else:
            outcome = await self._client.wait(self._run_id)
        assert outcome is not None, "GET /v1/runs/{id} answers with the run's outcome"
        return outcome_of(self._run_id, outcome)


class RemoteTarget:
    def __init__(self, client: AsyncClient, tenant: str | None) -> None:
        self._client = client
        self._tenant = tenant
        self.where = client.base_url

    async def _name(self, graph: GraphArg) -> str:
        """The served name of ``graph``: a name as given, or the graph served from a ref."""
        if isinstance(graph, CompiledGraph):
            return graph.name
        if ":" not in graph:
            return graph
        served = await self._client.graphs()
        for g in served:
            if g.ref == graph:
                return g.name
        names = ", ".join(f"{g.name} ({g.ref})" if g.ref else g.name for g in served) or "none"
        raise CliError(
            f"the server at {self.where} serves no graph from {graph!r}; name one it serves "
            f"(served: {names}), or start the server with --graph {graph}"
        )

    async def start(
        self,
        graph: GraphArg,
        input: Any,
        *,
        run_id: str | None,
        thread: str | None,
        durability: Durability | None,
    ) -> Handle:
        if durability is not None:
            raise CliError(
                "--durability applies to a local store; with --server the server's runtime "
                "decides (drop --durability)"
            )
        run = await self._client.start(
            await self._name(graph), input, thread=thread, run_id=run_id, tenant=self._tenant
        )  # (multitask "reject": never queued)
        return RemoteHandle(self._client, run.run_id)

    async def get_run(self, run_id: str) -> RunRecord:
        return record_of(await self._client.get_run(run_id))

    async def events(self, run_id: str, *, after: int = 0) -> list[Event]:
        return await self._client.events(run_id, after=after)

    def handle(self, run_id: str) -> Handle:
        return RemoteHandle(self._client, run_id)

    async def resume(
        self,
        run_id: str,
        value: Any,
        *,
        interrupt_id: str | None,
        graph: str | None,
        actor: str,
    ) -> Handle:
        _no_graph(graph)  # the actor is the API key: the server records it
        await self._client.resume(run_id, value, interrupt_id=interrupt_id)
        return RemoteHandle(self._client, run_id)

    async def fork(
        self,
        run_id: str,
        at: int,
        *,
        new_run_id: str | None,
        thread: str | None,
        effects: ForkEffects | None,
        graph: str | None,
        actor: str,
    ) -> Handle:
        _no_graph(graph)
        run = await self._client.fork(
            run_id, at, new_run_id=new_run_id, thread=thread, effects=effects
        )
        return RemoteHandle(self._client, run.run_id)

    async def cancel(self, run_id: str, *, graph: str | None, actor: str) -> RunStatus:
        _no_graph(graph)
        return (await self._client.cancel(run_id)).status

    async def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None,
        graph: str | None,
        thread: str | None,
        limit: int,
    ) -> list[RunRecord]:
        runs = await self._client.list_runs(
            status=status, graph=graph, thread=thread, tenant=self._tenant, limit=limit
        )
        return [record_of(r) for r in runs]

    async def orphans(self) -> set[str]:
        return set()  # the server takes orphaned runs over itself (it recovers them)

    async def list_threads(self, *, limit: int) -> list[ThreadInfo]:
        return [thread_of(t) for t in await self._client.list_threads(limit=limit)]

    async def state(self, run_id: str, *, at: int | None, graph: str | None) -> StateView:
        _no_graph(graph)
        view = await self._client.state(run_id, at=at)
        return StateView(
            view.run_id, view.seq, view.step or 0, view.status, view.state, view.next,
            pending_of(view.interrupts),
        )  # fmt: skip

    async def replay(self, run_id: str, *, graph: str | None) -> ReplayReport:
        _no_graph(graph)
        report = await self._client.replay(run_id)
        d = report.divergence
        divergence = None
        if d is not None:
            divergence = Divergence(
                int(d.get("seq", 0)), str(d.get("expected", "")), str(d.get("actual", ""))
            )
        return ReplayReport(report.run_id, report.ok, report.compared or 0, divergence)


def _no_graph(graph: str | None) -> None:
    if graph is not None:
        raise CliError(
            "--graph applies to a local store; with --server the server loads the run's "
            "graph itself (drop --graph, or serve it: mainspring serve --graph MODULE:ATTR)"
        )


@asynccontextmanager
async def open_remote(
    server: str, api_key: str | None, tenant: str | None
) -> AsyncIterator[RemoteTarget]:
    async with AsyncClient(server, api_key=api_key) as client:
        yield RemoteTarget(client, tenant)
