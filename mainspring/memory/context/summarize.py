"""Compressing older turns: a summarizer protocol, and one that asks the model gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ...models.messages import Message, system, user

if TYPE_CHECKING:
    from ...models.gateway import Gateway

INSTRUCTIONS: Final = (
    "Summarise the conversation below for the assistant that continues it. Keep the "
    "facts, names, numbers, decisions, open questions and what the user asked for; drop "
    "greetings and repetition. Write plain sentences, no preamble."
)


@runtime_checkable
class Summarizer(Protocol):
    """Turns older messages into one text of at most about ``max_tokens`` tokens (the
    assembler truncates what comes back longer)."""

    async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str: ...


class GatewaySummarizer:
    """Summarises through a :class:`~mainspring.models.Gateway` model, called once outside
    a run (``Gateway.complete``: routing, retries, caching, accounting as for any call;
    a summary made inside a node is better asked through ``ctx.model`` so it is
    journaled: give the assembler a summarizer that does that)."""

    def __init__(
        self, gateway: Gateway, model: str, *, instructions: str = INSTRUCTIONS, **options: Any
    ) -> None:
        self.gateway = gateway
        self.model = model
        self.instructions = instructions
        self.options = options

    async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        prompt = [
            system(f"{self.instructions} Use at most {max_tokens} tokens."),
            user(transcript(messages)),
        ]
        response = await self.gateway.complete(
            self.model, prompt, max_tokens=max_tokens, **self.options
        )
        return response.text.strip()


def transcript(messages: Sequence[Message]) -> str:
    """Messages as plain lines ``role: text`` (tool calls by name and arguments)."""
    lines = []
    for m in messages:
        text = m.text
        calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
        if calls:
            text = f"{text} [calls {calls}]" if text else f"[calls {calls}]"
        lines.append(f"{m.name or m.role}: {text}")
    return "\n".join(lines)
