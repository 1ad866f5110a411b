"""Tools: typed functions a model or a node calls as journaled, bounded effects.

``Toolbox([...])`` given to ``Runtime(store, tools=...)``; in a node,
``await ctx.tool(name, **args)``. The sandboxed ``python`` and ``shell`` tools, MCP
servers' tools and resilience backends load when first named.
"""

from .errors import (
    CircuitOpenError,
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

__all__ = [
    "CircuitOpenError",
    "RateLimitedToolError",
    "Resilience",
    "Retry",
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
    "tool",
]
