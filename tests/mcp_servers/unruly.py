"""An MCP server (the SDK's own MCPServer, formerly FastMCP) that misbehaves on request,
for the client's failure tests; also the HTTP server of the transport test.

    python unruly.py            stdio
    python unruly.py garbage    writes lines that are not JSON-RPC and never answers
    python unruly.py http PORT  streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("unruly", log_level="WARNING")


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@server.tool()
def sleep(seconds: float) -> str:
    """Sleep (blocking the whole server), then answer."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def garbage_then_hang() -> str:
    """Write a line that is not JSON-RPC on stdout, then never answer."""
    os.write(1, b"this is not json-rpc\n")
    time.sleep(3600)
    return "never"


@server.tool()
def crash() -> str:
    """Say why on stderr, then exit mid-call."""
    sys.stderr.write("unruly: crashing on purpose\n")
    sys.stderr.flush()
    os._exit(3)


@server.resource("memo://greeting", description="A greeting")
def greeting() -> str:
    return "hello from unruly"


@server.prompt()
def review(code: str) -> str:
    """Ask for a review of the code."""
    return f"Please review:\n{code}"


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "garbage":
        while sys.stdin.readline():
            sys.stdout.write("garbage, not json\n")
            sys.stdout.flush()
    elif mode == "http":
        import anyio

        anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=int(sys.argv[2])))
    else:
        server.run("stdio")
