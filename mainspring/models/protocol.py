"""The small protocols every model backend implements, and the stream's event types.

A provider answers a :class:`ModelRequest` whole (``complete``) or as a stream of
deltas ending in one :class:`StreamEnd` that carries the assembled response
(``stream``). Errors are raised as the ``models.errors`` tree, translated at the
provider's boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import msgspec

from .messages import ModelRequest, ModelResponse


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call"):
    """A piece of a tool call as it forms: ``arguments`` is the next fragment of its JSON."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning"):
    text: str


class StreamRestart(msgspec.Struct, frozen=True, tag="restart"):
    """The stream broke after it started and routing tries again (a retry, another model):
    what was streamed so far is void; deltas start over from here."""

    reason: str
    model: str = ""


class StreamEnd(msgspec.Struct, frozen=True, tag="end"):
    response: ModelResponse


StreamEvent: TypeAlias = TextDelta | ToolCallDelta | ReasoningDelta | StreamRestart | StreamEnd


@runtime_checkable
class ModelProvider(Protocol):
    """A model backend: OpenAI Chat / Responses, Anthropic, a scripted model, ..."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Deltas as they arrive, then one StreamEnd; a break after the first delta raises
        StreamInterruptedError."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """Texts to vectors (unit length where the model is trained for cosine)."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
