"""An MCP server's tool as a Mainspring ``Tool``, and MCP results as JSON data.

The tool's ``inputSchema`` is its parameters as given; arguments are checked against it
(JSON Schema, by ``jsonschema``) before the call, so a model gets the same
``ToolArgumentsError`` listing every problem as for a Python tool. A result becomes
JSON data: the structured content when the server gives it, else the text (one block:
a string; several: a list), other blocks (images, resources) as their JSON form. An
``isError`` result is a ``ToolFailedError`` with the server's text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import EllipsisType
from typing import Any, Protocol

import mcp_types as types

from ..models.messages import ImagePart, Message, Part, TextPart
from .errors import ToolArgumentsError, ToolFailedError
from .tool import Tool, ToolContext


class MCPCaller(Protocol):
    """What an MCP tool needs of its server (``MCPServer`` is one)."""

    @property
    def name(self) -> str: ...

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout: float | EllipsisType | None = ...
    ) -> types.CallToolResult: ...


log = logging.getLogger("mainspring.tools.mcp")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class MCPTool(Tool):
    """A tool of an MCP server, called through it (``MCPServer.tools()`` makes these)."""

    def __init__(
        self,
        server: MCPCaller,
        remote: types.Tool,
        *,
        name: str,
        timeout: float | None,
        **options: Any,
    ) -> None:
        async def call() -> Any: ...  # placeholder: MCPTool overrides the call path

        # The outer (toolbox) timeout is a backstop: the server's own call timeout fires
        # first, with the clearer message, and marks the connection for a check.
        backstop = None if timeout is None else timeout + 2.0
        description = remote.description or remote.title or f"The MCP tool {remote.name}."
        super().__init__(call, name=name, description=description, timeout=backstop, **options)
        self.server = server
        self.remote_name = remote.name
        self.call_timeout = timeout
        self.parameters = _parameters(remote.input_schema)
        self._validator = _validator(self.parameters, f"{server.name}/{remote.name}")

    def __repr__(self) -> str:
        return f"<MCPTool {self.name} of {self.server.name}>"

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        checked = dict(args)
        if self._validator is None:
            return checked
        problems = sorted(self._validator.iter_errors(checked), key=lambda e: list(e.path))
        if problems:
            raise ToolArgumentsError.of(
                self.name, [{"loc": tuple(e.absolute_path), "msg": e.message} for e in problems]
            )
        return checked

    def check_result(self, value: Any) -> Any:
        return value

    async def invoke(self, args: Mapping[str, Any], context: ToolContext) -> Any:
        result = await self.server.call_tool(
            self.remote_name, dict(args), timeout=self.call_timeout
        )
        return tool_result(self.name, result)


def tool_name(remote: str, prefix: str) -> str:
    """A name providers accept (letters, digits, ``_ . -``; at most 64)."""
    name = _UNSAFE.sub("_", f"{prefix}{remote}")
    return name[:64] or "tool"


def tool_result(name: str, result: types.CallToolResult) -> Any:
    if result.is_error:
        text = " ".join(_text(block) for block in result.content).strip()
        raise ToolFailedError(f"MCP tool {name!r} reported an error: {text or 'no detail given'}")
    if result.structured_content is not None:
        return result.structured_content
    blocks = [_block(block) for block in result.content]
    return blocks[0] if len(blocks) == 1 else blocks


def resource_contents(result: types.ReadResourceResult) -> Any:
    """A resource's text when it is one text; else each content as JSON data."""
    contents = result.contents
    if len(contents) == 1 and isinstance(contents[0], types.TextResourceContents):
        return contents[0].text
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in contents]


def prompt_messages(result: types.GetPromptResult) -> list[Message]:
    """A prompt's messages in the model gateway's shape (ready for ``ctx.model``)."""
    out: list[Message] = []
    for message in result.messages:
        content = message.content
        part: Part
        if isinstance(content, types.ImageContent):
            part = ImagePart(data=content.data, media_type=content.mime_type)
        else:
            part = TextPart(_text(content))
        out.append(Message(role=message.role, content=[part]))
    return out


def _text(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource) and isinstance(
        block.resource, types.TextResourceContents
    ):
        return block.resource.text
    dumped = block.model_dump(mode="json", by_alias=True, exclude_none=True)
    return str(dumped)[:500]


def _block(block: Any) -> Any:
    if isinstance(block, types.TextContent):
        return block.text
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)


def _parameters(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    params = dict(schema or {})
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return params


def _validator(schema: dict[str, Any], where: str) -> Any:
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    try:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
    except SchemaError as exc:
        log.warning("MCP tool %s: its input schema is invalid (%s); not validated", where, exc)
        return None
    return cls(schema)
