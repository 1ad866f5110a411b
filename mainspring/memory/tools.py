"""Ready-made memory tools for agents: remember, recall, forget.

They are ordinary tools (:mod:`mainspring.tools`): a model calls them, the call passes
the effect gate as a tool call (``policy`` rules name them ``remember``, ``recall``,
``forget``), its arguments are validated and its result journaled. Each acts for the
calling run's tenant and user (``ToolContext``), so an agent can never read or erase
another tenant's or another user's memory, whatever arguments the model makes up; a run
that names no user (``metadata["user"]``) gets an error from them, not everyone's memory.
``forget`` deletes only the user's own items (not shared ones, such as ingested documents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..tools.errors import ToolError
from ..tools.tool import Tool, ToolContext, tool
from .scope import Scope

if TYPE_CHECKING:
    from .bundle import Memory
    from .semantic.memory import SemanticMemory


def memory_tools(
    memory: Memory | SemanticMemory,
    *,
    agent: str | None = None,
    recall_limit: int = 5,
    forget: bool = True,
) -> list[Tool]:
    """The tools ``remember``, ``recall`` and (with ``forget=True``) ``forget`` on the
    semantic tier of ``memory``. ``agent`` tags what the tools remember and narrows
    what they recall to that agent's items (None: the user's items of any agent)."""

    def semantic() -> SemanticMemory:
        from .bundle import Memory

        return memory.require_semantic() if isinstance(memory, Memory) else memory

    def scope(ctx: ToolContext) -> Scope:
        if ctx.user is None:  # a query scope of user None means "any user": never for a model
            raise ToolError(
                "the memory tools act for the run's user, and this run names none: start it "
                "with metadata={'user': ...}"
            )
        return Scope(ctx.tenant or "", ctx.user, agent)

    async def remember(text: str, ctx: ToolContext, key: str | None = None) -> dict[str, Any]:
        """Remember a fact for later conversations (a preference, a decision, a detail
        the user gave). Write one self-contained fact per call.

        Args:
            text: the fact, in one or two sentences that make sense on their own
            key: optional subject of the fact, e.g. "user.city"; a later fact with the
                same key replaces this one
        """
        result = await semantic().add(text, scope=scope(ctx), key=key)
        return {"id": result.id, "status": result.status}

    async def recall(
        query: str, ctx: ToolContext, limit: int = recall_limit
    ) -> list[dict[str, Any]]:
        """Look up remembered facts relevant to a question.

        Args:
            query: what to look for, in words
            limit: how many facts at most (1-20)
        """
        hits = await semantic().search(query, scope=scope(ctx), limit=max(1, min(limit, 20)))
        return [{"id": h.item.id, "text": h.item.text, "score": round(h.score, 4)} for h in hits]

    async def forget_(id: str, ctx: ToolContext) -> dict[str, Any]:
        """Forget a remembered fact (for example when the user asks to), by the id that
        recall gave.

        Args:
            id: the fact's id
        """
        mine = scope(ctx)
        found = await semantic().get(id, tenant=mine.tenant)
        if found is None or found.scope.user != mine.user:  # another user's, or shared
            return {"forgotten": 0, "error": f"no remembered fact of yours with id {id!r}"}
        return {"forgotten": await semantic().forget([id], tenant=mine.tenant)}

    tools = [tool(remember), tool(recall)]
    if forget:
        tools.append(Tool(forget_, name="forget"))
    return tools
