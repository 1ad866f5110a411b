"""An agent's structured final output (``output_type``).

An agent without tools asks every turn with ``output=`` (the gateway validates and
repairs). An agent with tools asks with its tools (a provider cannot be held to a
schema and offered tools at once); when the model answers without calling one, that
answer is the final one: if its text already parses as the output type it is kept,
otherwise the final call is made again with ``output=`` and no tools, and its answer
replaces the prose one in the conversation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..engine.context import Context
from ..models.messages import Message, ModelResponse
from ..models.structured import StructuredOutputError, as_json_data, parse_output
from .state import to_dict


async def final_output(
    ctx: Context,
    agent: Any,
    messages: Sequence[Message],
    response: ModelResponse,
    options: Mapping[str, Any],
) -> tuple[Any, dict[str, Any] | None]:
    """(the output as JSON data, the message that replaces the final answer or None)."""
    tp = agent.output_type
    if "output" in options:  # asked with output=: the gateway validated it
        return as_json_data(response.output), None
    try:
        return as_json_data(parse_output(tp, response.text)), None
    except StructuredOutputError:
        pass
    asked = {k: v for k, v in options.items() if k not in ("tools", "tool_choice")}
    final = await ctx.model(agent.model, list(messages), output=tp, **asked)
    return as_json_data(final.output), to_dict(final.message)


def revive(tp: Any, data: Any) -> Any:
    """The output's JSON data as an instance of ``tp`` (JSON data for a schema dict)."""
    if data is None or tp is None or isinstance(tp, dict):
        return data
    from ..models.structured import validate_output

    return validate_output(tp, data)
