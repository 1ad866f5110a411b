"""Live streams of runs (docs/server.md, "Streams"; docs/server-streams.md).

``hub``: the per-process fan-out from the runtime's commits to subscribers; ``feed``: one
followed run's bounded buffers; ``sse`` and ``ws``: the two wire forms; ``watch``: the
runs of a tenant as they change.
"""

from __future__ import annotations

from .hub import End, Item, StreamHub
from .sse import EventStreamResponse

__all__ = ["End", "EventStreamResponse", "Item", "StreamHub"]
