"""Tools: typed functions a model or a node calls as journaled, bounded effects.

``Toolbox([...])`` given to ``Runtime(store, tools=...)``; in a node,
``await ctx.tool(name, **args)``. The sandboxed ``python`` and ``shell`` tools, MCP
servers' tools and resilience backends load when first named.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from .errors import (
    CircuitOpenError,
    MissingSecretError,
    RateLimitedToolError,
    ToolArgumentsError,
    ToolError,
    ToolFailedError,
    ToolResultError,
    ToolTimeoutError,
    UnknownToolError,
)
from .resilience import Resilience
from .tool import Retry, Tool, ToolContext, tool
from .toolbox import ToolApprovals, Toolbox

if TYPE_CHECKING:
    from .breaker import Breaker
    from .errors import NeedsHuman
    from .fallback import AskHuman, CachedResult, FallbackTool
    from .limits import MemoryLimits
    from .limits_postgres import PostgresLimits
    from .limits_redis import RedisLimits
    from .mcp_client import MCPServer
    from .mcp_server import serve_mcp
    from .sandbox import Sandbox, SandboxLimits, SandboxUnavailableError, sandbox_tools

# name -> the module that defines it, loaded on first use (the MCP SDK, the sandbox)
_LAZY = {
    "Breaker": ".breaker",
    "NeedsHuman": ".errors",
    "AskHuman": ".fallback",
    "CachedResult": ".fallback",
    "FallbackTool": ".fallback",
    "MemoryLimits": ".limits",
    "PostgresLimits": ".limits_postgres",
    "RedisLimits": ".limits_redis",
    "MCPServer": ".mcp_client",
    "serve_mcp": ".mcp_server",
    "Sandbox": ".sandbox",
    "SandboxLimits": ".sandbox",
    "SandboxUnavailableError": ".sandbox",
    "sandbox_tools": ".sandbox",
}

if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AskHuman",
    "Breaker",
    "CachedResult",
    "CircuitOpenError",
    "FallbackTool",
    "MCPServer",
    "MemoryLimits",
    "MissingSecretError",
    "NeedsHuman",
    "PostgresLimits",
    "RateLimitedToolError",
    "RedisLimits",
    "Resilience",
    "Retry",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailableError",
    "Tool",
    "ToolApprovals",
    "ToolArgumentsError",
    "ToolContext",
    "ToolError",
    "ToolFailedError",
    "ToolResultError",
    "ToolTimeoutError",
    "Toolbox",
    "UnknownToolError",
    "sandbox_tools",
    "serve_mcp",
    "tool",
]
