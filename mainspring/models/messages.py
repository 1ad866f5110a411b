"""One message model for every provider: messages, parts, tools, requests, responses.

msgspec Structs (cheap to make, JSON in one call): a response is journaled as the
dict :meth:`ModelResponse.to_dict` gives and rebuilt with :meth:`ModelResponse.from_dict`,
so a resumed run gets back exactly what the live run saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, cast

import msgspec

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


class TextPart(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ImagePart(msgspec.Struct, frozen=True, tag="image", omit_defaults=True):
    """An image by URL (``https:`` or ``data:``), or as base64 ``data`` of ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str = "image/png"

    def as_url(self) -> str:
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.data or ''}"


class ToolCall(msgspec.Struct, frozen=True, tag="tool_call"):
    """A call the model asks for: ``arguments`` parsed from the JSON it wrote."""

    id: str
    name: str
    arguments: dict[str, Any] = {}


Part: TypeAlias = TextPart | ImagePart | ToolCall


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Role
    content: list[Part] = []
    tool_call_id: str | None = None  # role "tool": the call this answers
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.content if isinstance(p, ToolCall)]


def system(text: str) -> Message:
    return Message("system", [TextPart(text)])


def user(*content: str | Part) -> Message:
    """A user message of text and parts: ``user("what is this?", ImagePart(url=...))``."""
    return Message("user", [TextPart(c) if isinstance(c, str) else c for c in content])


def assistant(text: str = "", tool_calls: Iterable[ToolCall] = ()) -> Message:
    parts: list[Part] = [TextPart(text)] if text else []
    parts.extend(tool_calls)
    return Message("assistant", parts)


def tool_result(call_id: str, content: str | Any, *, name: str | None = None) -> Message:
    """The answer to a tool call; a non-string result is sent as its JSON."""
    text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
    return Message("tool", [TextPart(text)], tool_call_id=call_id, name=name)


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool the model may call: a name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class OutputSpec(msgspec.Struct, frozen=True):
    """Structured output asked for: a JSON schema the answer must validate against."""

    name: str
    schema: dict[str, Any]
    strict: bool = True


class ModelRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """One call to one provider's model (``model`` is the provider's own model id)."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    tool_choice: str | None = None  # "auto", "none", "required" or a tool's name
    output: OutputSpec | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    params: dict[str, Any] = {}  # provider-specific fields, sent as given

    def with_model(self, model: str) -> ModelRequest:
        return msgspec.structs.replace(self, model=model)


class Usage(msgspec.Struct, frozen=True):
    """Tokens a call used (from the provider, or ``estimated`` with a tokenizer) and its cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    reasoning_tokens: int = 0  # of output_tokens, spent thinking
    cost: float | None = None  # in the price table's currency (USD by default)
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost is None and other.cost is None else (
            (self.cost or 0.0) + (other.cost or 0.0)
        )  # fmt: skip
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            cost,
            self.estimated or other.estimated,
        )


class ModelResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a model answered: one assistant message, why it stopped, and what it used."""

    message: Message
    model: str = ""  # the model that answered (after routing and fallbacks)
    provider: str = ""
    finish_reason: str = "stop"  # "stop", "length", "tool_calls", "content_filter"
    usage: Usage = Usage()
    id: str = ""
    output: Any = None  # the structured output, validated, as JSON data
    cached: bool = False  # answered by a response cache, not the model
    ttft: float | None = None  # seconds to the first token, when streamed
    latency: float | None = None  # seconds for the whole call
    attempts: list[dict[str, Any]] = []  # what routing tried before this answer

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelResponse:
        return msgspec.convert(data, cls)


def as_messages(prompt: str | Message | Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """A prompt as messages: a string is one user message; dicts are converted."""
    if isinstance(prompt, str):
        return [user(prompt)]
    if isinstance(prompt, Message):
        return [prompt]
    out: list[Message] = []
    for m in prompt:
        if isinstance(m, Message):
            out.append(m)
        elif isinstance(m, Mapping):
            out.append(message_from_mapping(m))
        else:
            raise TypeError(
                f"a message must be a Message or a dict with 'role' and 'content', not {m!r}"
            )
    return out


_ROLES = frozenset(("system", "user", "assistant", "tool"))
_KEYS = frozenset(("role", "content", "tool_call_id", "name"))
_TEXT_KEYS = frozenset(("type", "text"))


def _text_parts(m: Mapping[str, Any], content: list[Any]) -> list[Part] | None:
    """The parts of a message of text parts only, in the shape ``to_builtins`` gives
    (``{"type": "text", "text": ...}``), as msgspec.convert would make them; None for
    any other message. An agent's state keeps its messages as such dicts and converts
    each once: ~7.6k instructions by msgspec.convert, ~3k here (callgrind, W12
    2026-12-07)."""
    if not _KEYS.issuperset(m):
        return None
    call_id, name = m.get("tool_call_id"), m.get("name")
    if not (call_id is None or type(call_id) is str) or not (name is None or type(name) is str):
        return None
    parts: list[Part] = []
    for p in content:
        if type(p) is not dict or p.keys() != _TEXT_KEYS or p["type"] != "text":
            return None
        text = p["text"]
        if type(text) is not str:
            return None
        parts.append(TextPart(text))
    return parts


def _plain(m: Mapping[str, Any], role: str) -> bool:
    return len(m) == 2 and "content" in m and role in _ROLES


def message_from_mapping(m: Mapping[str, Any]) -> Message:
    """One message from its dict (an OpenAI-style one, or what ``to_builtins`` gave)."""
    role, content = m.get("role"), m.get("content", "")
    if isinstance(content, str) and isinstance(role, str) and _plain(m, role):
        # Exactly {"role": ..., "content": "text"}, the usual shape: what msgspec.convert
        # would build, made directly (about a microsecond per message on every call).
        return Message(cast(Role, role), [TextPart(content)] if content else [])
    if type(content) is list and type(role) is str and role in _ROLES:
        texts = _text_parts(m, content)
        if texts is not None:
            return Message(cast(Role, role), texts, m.get("tool_call_id"), m.get("name"))
    if isinstance(content, str):
        data = {**m, "content": [{"type": "text", "text": content}] if content else []}
    else:
        data = dict(m)
    try:
        return msgspec.convert(data, Message)
    except msgspec.ValidationError as exc:
        raise TypeError(
            f"message {dict(m)!r} does not fit the message model ({exc}); give 'role' "
            "(system, user, assistant or tool) and 'content' (a string or parts)"
        ) from None
