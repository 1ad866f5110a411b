"""``ctx.memory``: a node's reads and writes of memory, each a journaled effect.

Every call is an effect of kind ``memory`` named ``memory.<operation>`` (``memory.get``,
``memory.recall``...): it passes the runtime's effect gate (a policy sees the operation
and its arguments; the screen looks at what a read brings back), its result is recorded,
and a resumed, replayed or forked run gets the recorded result instead of reading again,
so it sees what the run saw. The tenant is the run's (``metadata["tenant"]``) and cannot
be named by the node; the user defaults to the run's ``metadata["user"]``.

The operations run on a per-tenant :class:`TenantOps`, whose bound methods are the
effects' functions (the tenant never appears among the arguments a policy could
rewrite). They return JSON data, which the journal records, the screen reads and a
replay gives back alike; :class:`NodeMemory` turns it into its type (``Hit``,
``Versioned``, ``WriteResult``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..engine.capabilities import NodeCalls
from ..engine.effects import EffectCall
from ..errors import RunStateError
from .scope import Scope
from .semantic.items import Hit, Source, WriteResult
from .session.protocol import Versioned

if TYPE_CHECKING:
    from .context import AssembledContext
    from .semantic.memory import SemanticMemory
    from .session.protocol import SessionMemory


class _Default(enum.Enum):
    """A parameter left to its default (where None means something else)."""

    KEEP = 0


_KEEP = _Default.KEEP  # the run's user; the session's default TTL (None: never expires)


class Tiers(Protocol):
    """What the operations use of the memory they act on (``Memory`` is one)."""

    session: SessionMemory | None
    semantic: SemanticMemory | None
    summary_model: str | None

    def require_session(self) -> SessionMemory: ...
    def require_semantic(self) -> SemanticMemory: ...


class TenantOps:
    """The memory operations of one tenant (see the module's docstring)."""

    def __init__(self, memory: Tiers, tenant: str) -> None:
        self.memory = memory
        self.tenant = tenant

    # -- session (hot) ----------------------------------------------------------------

    async def get(self, thread: str, key: str) -> Any:
        return await self.memory.require_session().get(thread, key, tenant=self.tenant)

    async def set(self, thread: str, key: str, value: Any, ttl: float | None = None) -> None:
        session = self.memory.require_session()
        if ttl == -1:  # the session's default (-1: JSON has no "missing")
            await session.set(thread, key, value, tenant=self.tenant)
        else:
            await session.set(thread, key, value, ttl=ttl, tenant=self.tenant)

    async def delete(self, thread: str, key: str) -> bool:
        return await self.memory.require_session().delete(thread, key, tenant=self.tenant)

    async def messages(self, thread: str, last: int | None = None) -> list[Any]:
        session = self.memory.require_session()
        return await session.messages(thread, last=last, tenant=self.tenant)

    async def append(self, thread: str, messages: list[Any]) -> int:
        session = self.memory.require_session()
        return await session.append(thread, *messages, tenant=self.tenant)

    async def shared(self, thread: str, key: str) -> Any:
        session = self.memory.require_session()
        return _plain(await session.read_shared(thread, key, tenant=self.tenant))

    async def compare_and_set(self, thread: str, key: str, value: Any, expected: int) -> Any:
        session = self.memory.require_session()
        written = await session.compare_and_set(
            thread, key, value, expected=expected, tenant=self.tenant
        )
        return _plain(written)

    # -- semantic (warm) --------------------------------------------------------------

    async def remember(
        self,
        text: str,
        user: str | None = None,
        agent: str | None = None,
        metadata: dict[str, Any] | None = None,
        key: str | None = None,
        valid_from: float | None = None,
        source: dict[str, Any] | None = None,
    ) -> Any:
        semantic = self.memory.require_semantic()
        return _plain(
            await semantic.add(
                text,
                scope=Scope(self.tenant, user, agent),
                metadata=metadata,
                key=key,
                valid_from=valid_from,
                source=None if source is None else Source(**source),
            )
        )

    async def recall(
        self,
        query: str,
        user: str | None = None,
        agent: str | None = None,
        limit: int = 5,
        filters: dict[str, Any] | None = None,
        mode: str = "hybrid",
        as_of: float | None = None,
    ) -> Any:
        semantic = self.memory.require_semantic()
        return _plain(
            await semantic.search(
                query,
                scope=Scope(self.tenant, user, agent),
                limit=limit,
                filters=filters,
                mode=mode,  # type: ignore[arg-type]  # checked by the search
                as_of=as_of,
            )
        )

    async def forget(self, ids: list[str]) -> int:
        return await self.memory.require_semantic().forget(ids, tenant=self.tenant)


class NodeMemory:
    """What ``ctx.memory`` is: memory as one node of one run may use it."""

    __slots__ = ("_node", "_ops")

    def __init__(self, ops: TenantOps, node: NodeCalls) -> None:
        self._ops = ops
        self._node = node

    @property
    def tenant(self) -> str:
        return self._ops.tenant

    def _user(self, user: str | _Default | None) -> str | None:
        if user is _KEEP:
            found = self._node.metadata.get("user")
            return found if isinstance(found, str) else None
        return user

    def _thread(self, what: str) -> str:
        thread = self._node.thread
        if thread is None:
            raise RunStateError(
                f"ctx.memory.{what} reads the run's thread, and this run has none: start it "
                "with a thread (rt.start(graph, input, thread='...'))"
            )
        return thread

    async def _call(self, name: str, fn: Callable[..., Any], args: dict[str, Any]) -> Any:
        return await self._node.effect(EffectCall("memory", f"memory.{name}", fn, (), args))

    # -- the thread's session state ---------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The thread's value of ``key`` (``default`` when absent or expired)."""
        args = {"thread": self._thread("get"), "key": key}
        found = await self._call("get", self._ops.get, args)
        return default if found is None else found

    async def set(self, key: str, value: Any, *, ttl: float | _Default | None = _KEEP) -> None:
        """Set the thread's ``key`` (JSON data); ``ttl`` seconds (None: never expires),
        by default the session memory's own TTL."""
        seconds = -1 if ttl is _KEEP else ttl
        args = {"thread": self._thread("set"), "key": key, "value": value, "ttl": seconds}
        await self._call("set", self._ops.set, args)

    async def delete(self, key: str) -> bool:
        return bool(
            await self._call(
                "delete", self._ops.delete, {"thread": self._thread("delete"), "key": key}
            )
        )

    async def messages(self, *, last: int | None = None) -> list[Any]:
        """The thread's message history (its ``last`` messages)."""
        args = {"thread": self._thread("messages"), "last": last}
        found: list[Any] = await self._call("messages", self._ops.messages, args)
        return found

    async def append(self, *messages: Any) -> int:
        """Append to the thread's message history; returns its length."""
        args = {"thread": self._thread("append"), "messages": list(messages)}
        length: int = await self._call("append", self._ops.append, args)
        return length

    # -- shared state between the agents of a thread ----------------------------------

    async def shared(self, key: str) -> Versioned | None:
        """The thread's shared value of ``key`` and its version (None: never written)."""
        found = await self._call(
            "shared", self._ops.shared, {"thread": self._thread("shared"), "key": key}
        )
        return None if found is None else msgspec.convert(found, Versioned)

    async def compare_and_set(self, key: str, value: Any, *, expected: int) -> Versioned:
        """Write the shared ``key`` only if its version is still ``expected`` (0: absent);
        raises ``VersionConflict`` (with the current value) otherwise."""
        args = {"thread": self._thread("compare_and_set"), "key": key, "value": value,
                "expected": expected}  # fmt: skip
        written = await self._call("compare_and_set", self._ops.compare_and_set, args)
        return msgspec.convert(written, Versioned)

    async def update(self, key: str, fn: Callable[[Any], Any], *, attempts: int = 100) -> Versioned:
        """Read-modify-write the shared ``key`` with ``fn(current value or None)``, retried
        on conflicts: concurrent writers never lose an update. The whole loop is one effect
        (a resumed run does not apply ``fn`` twice)."""
        thread = self._thread("update")
        tenant = self._ops.tenant
        session = self._ops.memory.require_session()

        async def update(thread: str, key: str) -> Any:  # called with the recorded arguments
            return _plain(await session.update(thread, key, fn, tenant=tenant, attempts=attempts))

        written = await self._node.effect(
            EffectCall("memory", "memory.update", update, (), {"thread": thread, "key": key})
        )
        return msgspec.convert(written, Versioned)

    # -- semantic memory --------------------------------------------------------------

    async def remember(
        self,
        text: str,
        *,
        user: str | _Default | None = _KEEP,
        agent: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
        valid_from: float | None = None,
        source: Source | None = None,
    ) -> WriteResult:
        """Add ``text`` to semantic memory for the run's tenant (and user: the run's
        ``metadata["user"]`` unless given). Returns at once: the item is keyword-searchable
        now and embedded in the background (``WriteResult.status``)."""
        args = {"text": text, "user": self._user(user), "agent": agent,
                "metadata": dict(metadata) if metadata else None, "key": key,
                "valid_from": valid_from,
                "source": None if source is None else _struct_dict(source)}  # fmt: skip
        result = await self._call("remember", self._ops.remember, args)
        return msgspec.convert(result, WriteResult)

    async def recall(
        self,
        query: str,
        *,
        limit: int = 5,
        user: str | _Default | None = _KEEP,
        agent: str | None = None,
        filters: Mapping[str, Any] | None = None,
        mode: str = "hybrid",
        as_of: float | None = None,
    ) -> list[Hit]:
        """The ``limit`` items most relevant to ``query`` in the run's tenant (and user,
        unless ``user=None``: any user)."""
        args = {"query": query, "user": self._user(user), "agent": agent, "limit": limit,
                "filters": dict(filters) if filters else None, "mode": mode,
                "as_of": as_of}  # fmt: skip
        found = await self._call("recall", self._ops.recall, args)
        # An item the screen withheld (an injection in a stored text) comes back as its
        # placeholder string: it is left out here (the quarantine event says why).
        return [msgspec.convert(h, Hit) for h in found if isinstance(h, dict)]

    async def forget(self, *ids: str) -> int:
        """Delete items by id (of the run's tenant only); returns how many were deleted."""
        forgotten: int = await self._call("forget", self._ops.forget, {"ids": list(ids)})
        return forgotten

    async def context(
        self,
        task: str,
        *,
        budget: int,
        user: str | _Default | None = _KEEP,
        agent: str | None = None,
        model: str | None = None,
        system: str | None = None,
        history: int = 200,
        items: int = 8,
        summarize: str | _Default | None = _KEEP,
    ) -> AssembledContext:
        """What to put before the model for ``task`` within ``budget`` tokens: the thread's
        last ``history`` messages, the ``items`` most relevant semantic items and a summary
        of what does not fit, de-duplicated, ranked and compressed, with what was left out
        and why (:func:`mainspring.memory.context.assemble`; tokens counted for ``model``).

        Each read is a memory effect and the summary a model call (``summarize``: a
        gateway model name, by default ``Memory(summary_model=...)``; None truncates
        instead), all through the gate: the assembly itself is a pure function of what
        they recorded, so a replay assembles the same context."""
        from .context import assemble

        memory = self._ops.memory
        messages: list[Any] = []
        if memory.session is not None and self._node.thread is not None and history:
            # A message the screen withheld comes back as its placeholder text: kept in
            # its place as a user message, so the conversation keeps its shape.
            messages = [
                m if isinstance(m, dict) else {"role": "user", "content": str(m)}
                for m in await self.messages(last=history)
            ]
        hits: list[Hit] = []
        if memory.semantic is not None and items and task.strip():
            hits = await self.recall(task, limit=items, user=user, agent=agent)
        chosen = memory.summary_model if summarize is _KEEP else summarize
        summarizer = None if chosen is None else _ModelSummarizer(self._node, chosen)
        return await assemble(
            task, budget=budget, messages=messages, items=hits, system=system, model=model,
            summarizer=summarizer,
        )  # fmt: skip


class _ModelSummarizer:
    """Summarises through ``ctx.model``: a journaled model call through the gate."""

    def __init__(self, node: Any, model: str) -> None:
        self.node = node
        self.model = model

    async def summarize(self, messages: Sequence[Any], *, max_tokens: int) -> str:
        from ..models.messages import system, user
        from .context.summarize import INSTRUCTIONS, transcript

        prompt = [
            system(f"{INSTRUCTIONS} Use at most {max_tokens} tokens."),
            user(transcript(messages)),
        ]
        response = await self.node.model(self.model, prompt, max_tokens=max_tokens)
        text: str = response.text.strip()
        return text


def _plain(value: Any) -> Any:
    """A result as JSON data: what the journal records, the screen reads and a replay
    gives back alike (``NodeMemory`` turns it into its type)."""
    return msgspec.json.decode(msgspec.json.encode(value))  # tuples as lists, as JSON has them


def _struct_dict(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(value)
    return out


__all__: Sequence[str] = ("NodeMemory", "TenantOps")
