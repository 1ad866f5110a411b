"""``Memory``: the three tiers as one capability of a runtime (``Runtime(memory=...)``).

    memory = Memory.open(session="redis://localhost:6379", semantic="sqlite:///memory.db")
    async with Runtime.open("sqlite:///agents.db", memory=memory) as rt: ...

Nodes reach it as ``ctx.memory`` (:mod:`.node`: every operation a journaled effect
through the gate), agents through ``Agent(memory=...)`` and the memory tools
(:mod:`.tools`). Outside a run, its tiers are used directly (``memory.session``,
``memory.semantic``, ``memory.archive``). The runtime opens the memory on entry and
closes it on exit; ``async with memory`` works too (it is opened once however many
users enter it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ..engine.capabilities import NodeCalls
from ..errors import RunStateError
from .node import NodeMemory, TenantOps
from .scope import Scope

if TYPE_CHECKING:
    from .archive.protocol import Archive
    from .archive.tiering import Tiering, TieringPolicy
    from .context import AssembledContext, Summarizer
    from .semantic.memory import SemanticMemory
    from .session.protocol import SessionMemory

log = logging.getLogger("mainspring.memory")


class Memory:
    """Session (hot), semantic (warm) and archive (cold) memory, any of them optional.

    What does not fit a context budget is summarised: in a run (``ctx.memory.context``)
    by ``summary_model``, a gateway model called through ``ctx.model`` (journaled, gated);
    outside runs (``memory.assemble``) by ``summarizer`` (e.g. ``GatewaySummarizer``).
    Without them, context assembly truncates. With ``tiering=`` (a ``TieringPolicy``),
    the memory moves idle sessions and old items of ``tenants`` to the archive every
    ``tier_every`` seconds while it is open (``memory.tiering.reports`` shows what
    moved). ``gate_hooks`` join the runtime's effect gate (after its own ``gates=``).
    """

    def __init__(
        self,
        *,
        session: SessionMemory | str | None = None,
        semantic: SemanticMemory | str | None = None,
        archive: Archive | str | None = None,
        summarizer: Summarizer | None = None,
        summary_model: str | None = None,
        tiering: TieringPolicy | None = None,
        tier_every: float = 3600.0,
        tenants: Sequence[str] = ("",),
        gate_hooks: Sequence[object] = (),
    ) -> None:
        if tiering is not None and (archive is None or tier_every <= 0):
            raise ValueError(
                "Memory(tiering=...) moves idle sessions and old items to the archive: give "
                "archive= (a directory or an Archive) and tier_every= seconds > 0"
            )
        self._session_spec = session
        self._semantic_spec = semantic
        self._archive_spec = archive
        self.session: SessionMemory | None = None if isinstance(session, str) else session
        self.semantic: SemanticMemory | None = None if isinstance(semantic, str) else semantic
        self.archive: Archive | None = None if isinstance(archive, str) else archive
        self.summarizer = summarizer
        self.summary_model = summary_model
        self._hooks = tuple(gate_hooks)
        self._policy, self._tier_every, self._tenants = tiering, tier_every, tuple(tenants)
        self.tiering: Tiering | None = None  # running while the memory is open, if asked
        self._ops: dict[str, TenantOps] = {}
        self._stack: AsyncExitStack | None = None
        self._held: list[tuple[anyio.Event, anyio.Event]] = []  # runtimes holding it open
        self._users = 0

    @classmethod
    def open(
        cls,
        *,
        session: str | None = "memory",
        semantic: str | None = None,
        archive: str | None = None,
        summarizer: Summarizer | None = None,
        summary_model: str | None = None,
    ) -> Memory:
        """Memory on URLs, opened when entered (by a runtime or ``async with``): session
        ``"memory"`` (in process) or ``"redis://..."``; semantic ``"sqlite:///path"`` or
        ``"postgresql://..."``; archive a directory."""
        return cls(
            session=session,
            semantic=semantic,
            archive=archive,
            summarizer=summarizer,
            summary_model=summary_model,
        )

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Memory:
        if self._users == 0:
            stack = AsyncExitStack()
            try:
                await self._open(stack)
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack
        self._users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0 and self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def attach(self, runtime: Any) -> None:
        """Called by the runtime on entry: the memory is held open by a task of the
        runtime's task group, so its own task groups (background embedding, tiering) nest
        inside that task and close with it, however the runtime's exit goes (cancelled,
        failed); an error opening it is raised here."""
        spawn = runtime.services.spawn
        opened, release, closed = anyio.Event(), anyio.Event(), anyio.Event()
        failed: list[BaseException] = []

        async def hold() -> None:
            try:
                async with self:
                    opened.set()
                    await release.wait()
            except BaseException as exc:  # an open that failed: raised by attach
                if not opened.is_set():
                    failed.append(exc)
                elif not isinstance(exc, anyio.get_cancelled_exc_class()):
                    log.exception("closing the runtime's memory failed")
            finally:
                opened.set()
                closed.set()

        spawn(hold)
        await opened.wait()
        if failed:
            raise failed[0]
        self._held.append((release, closed))

    async def detach(self, runtime: Any) -> None:
        """Called by the runtime on exit, before its task group ends: the holding task
        closes the memory (waited for even if the exit is cancelled)."""
        if self._held:
            release, closed = self._held.pop()
            release.set()
            with anyio.CancelScope(shield=True):
                await closed.wait()

    async def _open(self, stack: AsyncExitStack) -> None:
        if isinstance(self._session_spec, str):
            from .session import open_session_memory

            session = open_session_memory(self._session_spec)
            stack.push_async_callback(session.aclose)
            self.session = session
        if self._semantic_spec is not None:
            from .semantic.memory import SemanticMemory

            spec = self._semantic_spec
            if isinstance(spec, str):  # ours: opened and closed with us
                self.semantic = await stack.enter_async_context(SemanticMemory.open(spec))
            elif not spec.is_open:  # given closed: we open it, and close it
                await stack.enter_async_context(spec)
        if isinstance(self._archive_spec, str):
            from .archive.local import LocalArchive

            self.archive = await stack.enter_async_context(LocalArchive(self._archive_spec))
        if self._policy is not None and self.archive is not None:
            from .archive.tiering import Tiering

            self.tiering = Tiering(
                self._policy, self.archive, session=self.session, semantic=self.semantic,
                tenants=self._tenants,
            )  # fmt: skip
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(self.tiering.run_every, self._tier_every)
            stack.callback(tg.cancel_scope.cancel)  # runs first: the rounds stop, then the tiers

    # -- the capability ---------------------------------------------------------------

    @property
    def gate_hooks(self) -> Sequence[object]:
        return self._hooks

    def in_run(self, node: NodeCalls) -> NodeMemory:
        tenant = node.metadata.get("tenant") or ""
        ops = self._ops.get(tenant)
        if ops is None:
            if len(self._ops) >= 4096:
                self._ops.clear()
            ops = self._ops[tenant] = TenantOps(self, tenant)
        return NodeMemory(ops, node)

    def require_session(self) -> SessionMemory:
        if self.session is None:
            raise RunStateError(
                'this memory has no session tier: give Memory(session=...) ("memory" in '
                "process, or a redis:// URL)"
            )
        return self.session

    def require_semantic(self) -> SemanticMemory:
        if self.semantic is None:
            raise RunStateError(
                "this memory has no semantic tier: give Memory(semantic=...) (a sqlite:/// "
                "or postgresql:// URL, or a SemanticMemory)"
            )
        return self.semantic

    async def assemble(
        self,
        task: str,
        *,
        budget: int,
        thread: str | None = None,
        scope: Scope | None = None,
        model: str | None = None,
    ) -> AssembledContext:
        """Context for ``task`` within ``budget`` tokens from every tier this memory has."""
        from .context import ContextBuilder

        builder = ContextBuilder(
            session=self.session, semantic=self.semantic, summarizer=self.summarizer, model=model
        )
        return await builder.build(task, thread=thread, scope=scope or Scope(), budget=budget)
