"""What an agent's run holds: its messages (the conversation, as JSON dicts), the agent
that speaks now (handoffs change it), the turns taken, and the structured output.

Messages are kept as the dicts ``msgspec.to_builtins(Message)`` gives (the journal's
JSON), appended by the ``append`` reducer: the tool results of one turn arrive in the
order of the model's calls, because a superstep applies its tasks' updates in the
order the router sent them, whatever order they finished in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

import msgspec

from ..models.messages import Message, TextPart, as_messages, message_from_mapping
from ..state import append


def latest(old: Any, new: Any) -> Any:
    """Replace, also when several tasks of one step write (the last in call order wins)."""
    return new


class AgentState(TypedDict, total=False):
    # Message dicts (what msgspec.to_builtins(Message) gives). Typed loosely on purpose: the
    # loop makes them itself, and a strict check of every update would cost more than a turn.
    messages: Annotated[list[Any], append]
    agent: Annotated[str, latest]  # the agent that speaks now (a handoff changes it)
    turns: int  # model turns taken in this run
    max_turns: int | None  # this run's limit, when its caller set one (agent.as_tool)
    output: Any  # the structured final output, as JSON data
    caller: dict[str, str] | None  # as a tool: the parent's call ({"id", "name"})
    recalled: str | None  # this turn's recall note (Agent(memory=...)), kept for its calls


def to_dict(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(message)
    return data


def message_dicts(
    prompt: str | Message | Sequence[Message | Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """A prompt (a string, a Message, messages or OpenAI-style dicts) as state messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return [to_dict(m) for m in as_messages(prompt)]


def text_of(message: Mapping[str, Any]) -> str:
    return "".join(
        str(p.get("text", "")) for p in message.get("content", ()) if p.get("type") == "text"
    )


def tool_calls_of(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if message.get("role") != "assistant":
        return []
    return [p for p in message.get("content", ()) if p.get("type") == "tool_call"]


def tool_result_dict(call_id: str, name: str, content: Any) -> dict[str, Any]:
    """A tool's answer to call ``call_id`` (a non-string result as its JSON)."""
    text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
    return {
        "role": "tool",
        "content": [{"type": "text", "text": text}],
        "tool_call_id": call_id,
        "name": name,
    }


def final_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last assistant message (the agent's answer)."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return text_of(message)
    return ""


def as_message(data: Mapping[str, Any]) -> Message:
    if type(data) is dict:  # the state's own dicts: no list around it, no ABC check
        return message_from_mapping(data)
    return as_messages([data])[0]


__all__ = ["AgentState", "Message", "TextPart", "latest"]
