"""An agent's use of memory: recall before a turn, remember after it.

``Agent(..., memory=AgentMemory(...))`` (or ``memory=True`` for the defaults) makes the
agent's loop, on the first model call of each run (a user turn), recall the items most
relevant to the user's message through ``ctx.memory.recall`` and put them before the
conversation as a system note; the note is kept in the run's state, so the turn's later
model calls see the same one. When the agent answers, it remembers the turn
(``ctx.memory.remember``): the user's message, or the exchange, or what a function of
yours picks. Both are memory effects: journaled, policy-checked, tenant-scoped, and the
run needs a runtime built with ``memory=Memory(...)`` that has a semantic tier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..engine.context import Context
from ..models.messages import Message, system
from .state import text_of

Remember = Literal["input", "exchange", "off"] | Callable[[str, str], Sequence[str]]


@dataclass(frozen=True, slots=True)
class AgentMemory:
    """How an agent recalls and remembers.

    ``recall``: how many items to put before a turn (0: none); ``min_score``: leave out
    items whose cosine similarity to the user's message is lower (0.2 by default: with
    the local model, unrelated texts score about -0.05 to 0.15 and related ones 0.25 and
    up; an item found by its words alone is kept); ``remember``: after the answer, ``"input"`` keeps the user's message,
    ``"exchange"`` the message and the answer together, ``"off"`` nothing, or a function
    ``(user_message, answer) -> texts`` picks what to keep; ``agent_scoped``: recall only
    what this agent remembered (by default every agent's items of the user).
    """

    recall: int = 5
    min_score: float = 0.2
    remember: Remember = "exchange"
    agent_scoped: bool = False
    header: str = "What you remember from earlier conversations (it may be out of date):"

    def __post_init__(self) -> None:
        if self.recall < 0:
            raise ValueError(f"AgentMemory(recall={self.recall}): give 0 (off) or more items")
        if not callable(self.remember) and self.remember not in ("input", "exchange", "off"):
            raise ValueError(
                f"AgentMemory(remember={self.remember!r}): use 'input', 'exchange', 'off' "
                "or a function (user_message, answer) -> texts"
            )


def agent_memory(value: AgentMemory | bool | None) -> AgentMemory | None:
    if value is None or value is False:
        return None
    if value is True:
        return AgentMemory()
    if isinstance(value, AgentMemory):
        return value
    raise TypeError(f"Agent(memory={value!r}): give True, False or an AgentMemory(...)")


def user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message: what the turn is about."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message)
    return ""


async def recall_note(
    ctx: Context, config: AgentMemory, agent: str, messages: Sequence[Mapping[str, Any]]
) -> str:
    """The system note of what memory holds on the turn's user message ("" if nothing)."""
    query = user_text(messages)
    if config.recall == 0 or not query.strip():
        return ""
    hits = await ctx.memory.recall(
        query, limit=config.recall, agent=agent if config.agent_scoped else None
    )
    lines = [f"- {h.item.text}" for h in hits if h.vector is None or h.vector >= config.min_score]
    return "\n".join([config.header, *lines]) if lines else ""


def with_note(messages: list[Message], note: str, after: int) -> list[Message]:
    """``messages`` with the recall note after the first ``after`` (the instructions)."""
    if not note:
        return messages
    return [*messages[:after], system(note), *messages[after:]]


async def remember_turn(
    ctx: Context, config: AgentMemory, agent: str, messages: Sequence[Mapping[str, Any]],
    answer: str,
) -> None:  # fmt: skip
    """Keep what ``config.remember`` says of the turn that just ended."""
    how = config.remember
    question = user_text(messages)
    if how == "off" or not question.strip():
        return
    if callable(how):
        texts = [t for t in how(question, answer) if t and t.strip()]
    elif how == "input":
        texts = [question]
    else:
        texts = [f"User: {question}\nAssistant: {answer}" if answer else f"User: {question}"]
    for text in texts:
        await ctx.memory.remember(text, agent=agent, metadata={"run": ctx.run_id})
