"""What context assembly gives back: the messages, and an account of every input."""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from ...models.messages import Message

Origin: TypeAlias = Literal["system", "task", "message", "summary", "item"]
Reason: TypeAlias = Literal["budget", "duplicate", "summarized", "truncated"]


class Summary(msgspec.Struct, frozen=True):
    """A summary of earlier conversation a caller already has (say, kept from an earlier
    assembly); ``id`` names it in the report (by default ``summary:<index>``)."""

    text: str
    id: str | None = None


class Included(msgspec.Struct, frozen=True):
    """An input that is in the context whole. ``tokens``: what it costs there (its text
    and, for a message, the chat format's framing)."""

    source: Origin
    id: str
    tokens: int


class LeftOut(msgspec.Struct, frozen=True):
    """An input that is not in the context whole, and why.

    ``budget``: it did not fit; ``duplicate``: it repeats ``duplicate_of``, which is in
    the context; ``summarized``: an older message that the generated summary stands for;
    ``truncated``: in the context, cut to ``kept`` tokens with a marker. ``tokens`` is
    what was left out (for ``truncated``, the part cut off); ``estimated``: a message
    older than any that had to be weighed, whose tokens were never counted (a process's
    first look at a long thread would otherwise tokenise all of it) but estimated from
    its length.
    """

    source: Origin
    id: str
    reason: Reason
    tokens: int
    kept: int = 0
    duplicate_of: str | None = None
    estimated: bool = False


class AssembledContext(msgspec.Struct):
    """Messages ready for a model call, within ``budget`` tokens.

    ``tokens`` is the exact prompt count of ``messages`` in the chat format (what
    :func:`mainspring.models.tokens.count_message_tokens` says), never above ``budget``.
    Every input is in ``included`` or ``left_out``, exactly once (ids: ``system``,
    ``task``, ``message:<index in the given messages>``, ``summary:<index>`` or the
    summary's id, an item's id). A summary generated here is the one extra entry of
    ``included`` (id ``summary:generated``); its text is ``summary``, so a caller can
    keep it and pass it back next time instead of summarising again.
    """

    messages: list[Message]
    tokens: int
    budget: int
    included: list[Included]
    left_out: list[LeftOut]
    summary: str | None = None
    summary_error: str | None = None  # the summarizer failed: older turns were dropped

    def left_out_by(self, reason: Reason) -> list[LeftOut]:
        return [entry for entry in self.left_out if entry.reason == reason]


class ContextBudgetError(ValueError):
    """The budget cannot hold even the parts that must be there (the system prompt, the
    task and the chat format's framing)."""
