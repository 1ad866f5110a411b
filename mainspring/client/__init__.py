"""A typed Python client of a Mainspring server (``mainspring serve``): docs/client.md.

``AsyncClient`` on httpx, and ``Client``, the same calls for scripts through one
blocking portal. Results are the dataclasses of ``models.py`` and journal events are
:class:`mainspring.events.Event`; errors are Mainspring's own exceptions where one
exists (``RunNotFoundError``, ...), else :class:`ClientError`.
"""

from __future__ import annotations

from .aio import DEFAULT_SERVER, AsyncClient
from .errors import (
    AuthError,
    ClientError,
    ClientTimeoutError,
    GraphNotFoundError,
    NotFoundError,
    ServerUnreachableError,
    StreamLostError,
    ThreadBusyError,
)
from .models import (
    GraphInfo,
    Interrupt,
    Outcome,
    QueuedRun,
    Replay,
    Run,
    StateAt,
    Thread,
    ThreadDetail,
)
from .stream import Reconnect, RunStream
from .sync import Client

__all__ = [
    "DEFAULT_SERVER",
    "AsyncClient",
    "AuthError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "GraphInfo",
    "GraphNotFoundError",
    "Interrupt",
    "NotFoundError",
    "Outcome",
    "QueuedRun",
    "Reconnect",
    "Replay",
    "Run",
    "RunStream",
    "ServerUnreachableError",
    "StateAt",
    "StreamLostError",
    "Thread",
    "ThreadBusyError",
    "ThreadDetail",
]
