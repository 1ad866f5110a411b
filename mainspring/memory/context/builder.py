"""Context from the memory tiers: a thread's recent messages from session memory, the
items semantic memory finds for the task, then :func:`assemble`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import anyio

from ..scope import Scope
from ..semantic.items import Hit
from .assemble import SummaryLike, assemble
from .summarize import Summarizer
from .types import AssembledContext


class MessageHistory(Protocol):
    """What the builder reads of session memory (``SessionMemory`` has it)."""

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]: ...


class ItemSearch(Protocol):
    """What the builder asks of semantic memory (``SemanticMemory`` has it)."""

    async def search(self, query: str, *, scope: Scope, limit: int) -> Sequence[Hit]: ...


class ContextBuilder:
    """Gathers from the tiers and assembles: ``await builder.build(task, thread=...,
    scope=Scope(tenant, user), budget=8000)``.

    ``history`` is how many of the thread's last messages are read (the assembler keeps
    what fits of them), ``items`` how many semantic hits are asked for; the other
    settings are :func:`assemble`'s. Either tier may be None.
    """

    def __init__(
        self,
        *,
        session: MessageHistory | None = None,
        semantic: ItemSearch | None = None,
        summarizer: Summarizer | None = None,
        system: str | None = None,
        model: str | None = None,
        history: int | None = 200,
        items: int = 8,
        keep_last: int = 2,
        item_share: float = 0.25,
    ) -> None:
        if history is not None and history < 0:
            raise ValueError(f"history is a number of messages (0 or more), not {history}")
        if items < 0:
            raise ValueError(f"items is a number of hits (0 or more), not {items}")
        self.session = session
        self.semantic = semantic
        self.summarizer = summarizer
        self.system = system
        self.model = model
        self.history = history
        self.items = items
        self.keep_last = keep_last
        self.item_share = item_share

    async def build(
        self,
        task: str,
        *,
        budget: int,
        thread: str | None = None,
        scope: Scope | None = None,
        summaries: Sequence[SummaryLike] = (),
        system: str | None = None,
    ) -> AssembledContext:
        """The context for ``task``: the thread's messages (when a session memory and a
        ``thread`` are given) and the hits for the task in ``scope`` (when a semantic
        memory is given), read concurrently, then assembled within ``budget``."""
        scope = scope or Scope()
        messages: list[Any] = []
        hits: Sequence[Hit] = ()

        async def read_messages() -> None:
            nonlocal messages
            if self.session is not None and thread is not None and self.history != 0:
                messages = await self.session.messages(
                    thread, last=self.history, tenant=scope.tenant
                )

        async def search() -> None:
            nonlocal hits
            if self.semantic is not None and self.items and task.strip():
                hits = await self.semantic.search(task, scope=scope, limit=self.items)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_messages)
            tg.start_soon(search)
        return await assemble(
            task,
            budget=budget,
            messages=messages,
            items=hits,
            summaries=summaries,
            system=system if system is not None else self.system,
            model=self.model,
            keep_last=self.keep_last,
            summarizer=self.summarizer,
            item_share=self.item_share,
        )
