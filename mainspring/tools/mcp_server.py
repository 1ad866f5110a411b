"""A Mainspring toolbox (and, optionally, an agent) served as an MCP server (``mcp`` SDK v2).

    server = serve_mcp(toolbox, name="orders", runtime=rt, agent=support_agent)
    # stdio:  python -m mainspring.tools.mcp_server myapp.tools:toolbox
    # HTTP:   python -m mainspring.tools.mcp_server myapp.tools:toolbox --http 8000

Each tool is listed with its own schema (``Tool.spec()``) and called through
``Toolbox.call``, so arguments are validated and the call bounded as in a run; bad
arguments and a tool that fails come back as ``isError`` results whose text says what
to fix. With a ``runtime``, each call is a journaled run of a one-node graph (visible in
``mainspring runs``, durable; a tool that needs approval parks it and the result says
which run waits). ``agent`` is any ``async (input: str) -> str``, served as one tool.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypedDict

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext

from ..engine.context import Context
from ..graph import END, START, Graph
from .errors import ToolError
from .tool import Tool
from .toolbox import Toolbox

Agent = Callable[[str], Awaitable[str]]
_AGENT_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "What to ask the agent."}},
    "required": ["input"],
    "additionalProperties": False,
}


class ToolCallState(TypedDict, total=False):
    tool: str
    args: dict[str, Any]
    result: Any
    error: str


def _call_graph() -> Any:
    g = Graph(ToolCallState, name="mcp-tool-call")

    @g.node
    async def call(s: ToolCallState, ctx: Context) -> ToolCallState:
        try:
            return {"result": await ctx.tool(s["tool"], **s.get("args", {}))}
        except ToolError as exc:  # recorded in the journal as the effect's error
            return {"error": exc.for_model()}

    g.edge(START, "call")
    g.edge("call", END)
    return g.compile(ref="mainspring.tools.mcp_server:call_graph")


call_graph = _call_graph()


def serve_mcp(
    tools: Toolbox | Iterable[Tool | Callable[..., Any]],
    *,
    name: str = "mainspring",
    runtime: Any = None,
    agent: Agent | None = None,
    agent_name: str = "agent",
    agent_description: str = "Ask the agent; it answers in text.",
    instructions: str | None = None,
) -> Server[Any]:
    """An MCP server (the SDK's ``Server``) exposing ``tools``. With ``runtime`` (a
    ``Runtime`` whose ``tools=`` is this toolbox), each call is a journaled run."""
    box = tools if isinstance(tools, Toolbox) else Toolbox(tools)
    if agent is not None and agent_name in box:
        raise ValueError(f"the agent's name {agent_name!r} is also a tool's; pass agent_name=")
    if runtime is not None and runtime.services.tools is not box:
        raise ValueError("runtime= must be built with tools= this same toolbox")

    listed = [_listed(t) for t in box]
    if agent is not None:
        listed.append(types.Tool(name=agent_name, description=agent_description,
                                 input_schema=_AGENT_SCHEMA))  # fmt: skip

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        args = dict(params.arguments or {})
        if agent is not None and params.name == agent_name:
            return await _ask_agent(agent, agent_name, args)
        if runtime is not None:
            return await _call_in_run(runtime, params.name, args)
        try:
            return _success(await box.call(params.name, args))
        except ToolError as exc:
            return _failure(exc.for_model())

    return Server(name, instructions=instructions, on_list_tools=list_tools,
                  on_call_tool=call_tool)  # fmt: skip


def _listed(tool: Tool) -> types.Tool:
    spec = tool.spec()
    return types.Tool(name=spec.name, description=spec.description, input_schema=spec.parameters)


async def _call_in_run(runtime: Any, name: str, args: Mapping[str, Any]) -> types.CallToolResult:
    if name not in runtime.services.tools:
        return _failure(f"error: no tool named {name!r}")
    handle = await runtime.start(call_graph, {"tool": name, "args": dict(args)},
                                 metadata={"via": "mcp"})  # fmt: skip
    outcome = await handle.wait()
    state = outcome.state or {}
    if outcome.interrupts:
        return _failure(
            f"the call to {name!r} waits for a person's approval in run {outcome.run_id} "
            "(it is parked; once decided, the run finishes the call)"
        )
    if "error" in state:
        return _failure(str(state["error"]))
    if "result" not in state:
        return _failure(f"error: the run {outcome.run_id} of {name!r} ended {outcome.status}")
    return _success(state["result"])


async def _ask_agent(agent: Agent, name: str, args: Mapping[str, Any]) -> types.CallToolResult:
    text = args.get("input")
    if not isinstance(text, str) or set(args) - {"input"}:
        return _failure(
            f"error: invalid arguments for tool {name!r}: give exactly one string, 'input'"
        )
    try:
        answer = await agent(text)
    except Exception as exc:
        return _failure(f"error: the agent {name!r} failed: {type(exc).__name__}: {exc}")
    return types.CallToolResult(content=[types.TextContent(type="text", text=str(answer))])


def _success(result: Any) -> types.CallToolResult:
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    structured = result if isinstance(result, dict) else None
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def _failure(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


# -- running it ------------------------------------------------------------------------------


async def run_stdio(server: Server[Any]) -> None:
    """Serve on this process's stdin and stdout until stdin closes."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def run_http(server: Server[Any], *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until cancelled."""
    import uvicorn

    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    """``python -m mainspring.tools.mcp_server module:toolbox [--http PORT] [--store URL]``."""
    import argparse
    import importlib

    import anyio

    parser = argparse.ArgumentParser(prog="python -m mainspring.tools.mcp_server")
    parser.add_argument("toolbox", help="module:attribute of a Toolbox (or a list of tools)")
    parser.add_argument("--name", default="mainspring")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store", help="journal each call as a run in this store (URL)")
    opts = parser.parse_args(argv)
    module, _, attr = opts.toolbox.partition(":")
    if not attr:
        parser.error(f"{opts.toolbox!r}: name the toolbox as module:attribute")
    target = getattr(importlib.import_module(module), attr)
    box = target if isinstance(target, Toolbox) else Toolbox(target)

    async def serve() -> None:
        if opts.store is None:
            server = serve_mcp(box, name=opts.name)
            await (run_http(server, host=opts.host, port=opts.http) if opts.http
                   else run_stdio(server))  # fmt: skip
            return
        from ..engine.runtime import Runtime

        async with Runtime.open(opts.store, tools=box, graphs=[call_graph]) as rt:
            server = serve_mcp(box, name=opts.name, runtime=rt)
            await (run_http(server, host=opts.host, port=opts.http) if opts.http
                   else run_stdio(server))  # fmt: skip

    anyio.run(serve)


if __name__ == "__main__":
    main()
