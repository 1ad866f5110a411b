"""Where a command acts: the runtime on ``--store``, or a server (``--server URL``).

Each command has one code path, written against :class:`Target`: the runtime's calls
the command needs, answering in the runtime's own types (``RunRecord``, ``Event``,
``RunOutcome``), so the same lines print a run whether it was read from a store file
or over HTTP. ``LocalTarget`` is a thin pass-through to the runtime (or a tenant's
view of it); ``RemoteTarget`` (``_remote.py``) speaks to the server through
:mod:`mainspring.client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

import typer

from ..engine.timetravel import ForkEffects, ReplayReport, StateView
from ..errors import RunNotFoundError
from ..events import Event
from ..status import Durability, RunStatus
from ..store import RunRecord, ThreadInfo
from ._common import Api, graph_of_run, import_graph, maybe_graph, open_runtime, scope
from ._handle import GraphArg, Handle

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="MAINSPRING_SERVER",
        metavar="URL",
        help="Act through the Mainspring server at URL (`mainspring serve`) instead of "
        "opening --store; graphs are the server's, named as it serves them.",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MAINSPRING_API_KEY",
        metavar="KEY",
        help="The API key for --server (`mainspring keys create`); its tenant and scopes "
        "decide what the command may see and do.",
    ),
]


class Target(Protocol):
    """What the run commands do to runs; see the module's docstring."""

    @property
    def where(self) -> str:
        """The store URL or the server URL, as pasted into a command (``_outcome.command``)."""
        ...

    async def start(
        self,
        graph: GraphArg,
        input: Any,
        *,
        run_id: str | None,
        thread: str | None,
        durability: Durability | None,
    ) -> Handle: ...

    async def get_run(self, run_id: str) -> RunRecord: ...

    async def events(self, run_id: str, *, after: int = 0) -> list[Event]: ...

    def handle(self, run_id: str) -> Handle: ...

    async def resume(
        self,
        run_id: str,
        value: Any,
        *,
        interrupt_id: str | None,
        graph: str | None,
        actor: str,
    ) -> Handle: ...

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
    ) -> Handle: ...

    async def cancel(self, run_id: str, *, graph: str | None, actor: str) -> RunStatus: ...

    async def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None,
        graph: str | None,
        thread: str | None,
        limit: int,
    ) -> list[RunRecord]: ...

    async def orphans(self) -> set[str]:
        """Runs left running by a process that is gone (known only with the store at hand)."""
        ...

    async def list_threads(self, *, limit: int) -> list[ThreadInfo]: ...

    async def state(self, run_id: str, *, at: int | None, graph: str | None) -> StateView: ...

    async def replay(self, run_id: str, *, graph: str | None) -> ReplayReport: ...


async def exists(target: Target, run_id: str | None) -> bool:
    if run_id is None:
        return False
    try:
        await target.get_run(run_id)
    except RunNotFoundError:
        return False
    return True


class LocalTarget:
    """The runtime on ``--store``, as ``--tenant`` sees it."""

    def __init__(self, admin: Any, api: Api, store: str) -> None:
        self._admin = admin
        self._api = api
        self.where = store

    async def start(
        self,
        graph: GraphArg,
        input: Any,
        *,
        run_id: str | None,
        thread: str | None,
        durability: Durability | None,
    ) -> Handle:
        app = import_graph(graph) if isinstance(graph, str) else graph
        return await self._api.start(
            app, input, run_id=run_id, thread=thread, durability=durability
        )

    async def get_run(self, run_id: str) -> RunRecord:
        return await self._api.get_run(run_id)

    async def events(self, run_id: str, *, after: int = 0) -> list[Event]:
        return await self._api.events(run_id, after=after)

    def handle(self, run_id: str) -> Handle:
        return self._api.handle(run_id)

    async def resume(
        self,
        run_id: str,
        value: Any,
        *,
        interrupt_id: str | None,
        graph: str | None,
        actor: str,
    ) -> Handle:
        api = self._api
        record = await api.get_run(run_id)
        # An ended run needs no graph: the runtime says there is nothing to resume.
        app = None if record.status.terminal else await graph_of_run(api, run_id, graph)
        return await api.resume(run_id, value, interrupt_id=interrupt_id, graph=app, actor=actor)

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
        api = self._api
        app = await graph_of_run(api, run_id, graph)
        return await api.fork(
            run_id,
            at,
            new_run_id=new_run_id,
            graph=app,
            thread=thread,
            effects=effects,
            actor=actor,
        )

    async def cancel(self, run_id: str, *, graph: str | None, actor: str) -> RunStatus:
        app = maybe_graph(graph)
        if app is not None:
            self._api.register(app)  # Runtime.cancel takes no graph=: make it known by name
        await self._api.cancel(run_id, actor=actor)
        return (await self._api.get_run(run_id)).status

    async def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None,
        graph: str | None,
        thread: str | None,
        limit: int,
    ) -> list[RunRecord]:
        return await self._api.list_runs(status=status, graph=graph, thread=thread, limit=limit)

    async def orphans(self) -> set[str]:
        # Found store-wide (admin), but only marked on the runs a command lists.
        return {r.run_id for r in await self._admin.recover(resume=False)}

    async def list_threads(self, *, limit: int) -> list[ThreadInfo]:
        return await self._api.list_threads(limit=limit)

    async def state(self, run_id: str, *, at: int | None, graph: str | None) -> StateView:
        api = self._api
        return await api.state(run_id, at=at, graph=await graph_of_run(api, run_id, graph))

    async def replay(self, run_id: str, *, graph: str | None) -> ReplayReport:
        api = self._api
        return await api.replay(run_id, graph=await graph_of_run(api, run_id, graph))


@asynccontextmanager
async def open_target(
    store: str,
    server: str | None,
    api_key: str | None,
    tenant: str | None,
    *,
    create: bool = False,
    models: str | None = None,
    tools: str | None = None,
) -> AsyncIterator[Target]:
    """The target a command acts on: the server at ``server`` if given (``--models`` and
    ``--tools`` are then the server's own), else the runtime on ``store``."""
    if server:  # (an empty --server or MAINSPRING_SERVER= means none)
        from ._remote import open_remote

        async with open_remote(server, api_key, tenant) as remote:
            yield remote
        return
    async with open_runtime(store, create=create, models=models, tools=tools) as admin:
        yield LocalTarget(admin, scope(admin, tenant), store)
