"""A real uvicorn server on a free 127.0.0.1 port, for tests of the HTTP API.

The socket is bound and listening before uvicorn starts, so the port is known at once and
a client that connects early waits in the backlog: no polling for the server to be up.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import anyio
import uvicorn
from starlette.types import ASGIApp


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, graceful: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` for the block; its base URL (``http://127.0.0.1:PORT``). The socket
    listens before uvicorn starts, so a client that connects at once waits in the backlog.
    ``graceful``: seconds uvicorn gives open connections when the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False,
        timeout_graceful_shutdown=graceful,
    )  # fmt: skip
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
