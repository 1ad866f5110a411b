"""uvicorn's Server as ``mainspring serve`` runs it (imported only by that command)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import threading
from collections.abc import Callable, Generator, Sequence
from types import FrameType
from typing import Any

import typer
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Server(uvicorn.Server):
    """Says where it listens once it does (port 0 picks one); as it begins to stop, ends
    the open event streams (``stopping``: their clients reconnect with their last id,
    rather than the shutdown waiting on streams that never end); and stops on SIGINT or
    SIGTERM without raising the signal again afterwards, as uvicorn does: the command
    ends with its own message and exit code 0. A second signal (either) cuts the stop
    short (``hurry``: the runtime stops draining; the open connections are not waited
    for): runs still going stay resumable, the store is still closed cleanly."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        store: str,
        graphs: Sequence[str],
        auth: bool,
        stopping: Callable[[], None] | None = None,
        hurry: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._about = (store, tuple(graphs), auth)
        self._stopping = stopping
        self._hurry = hurry
        self._loop: asyncio.AbstractEventLoop | None = None
        self.hurried = False
        self.url = ""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets=sockets)
        except SystemExit:  # it could not listen (logged, the app shut down): the command says so
            self.should_exit = True
            return
        if self.started:
            self.url = self._listening()
            store, graphs, auth = self._about
            served = ", ".join(graphs) or "no graphs (pass --graph MODULE:ATTR)"
            typer.echo(
                f"mainspring serve: {self.url}/ (console), {self.url}/docs (API)\n"
                f"  store {store}; serving {served}; "
                + ("API keys required" if auth else "no auth (loopback only)")
                + "\n  Ctrl-C stops it; live runs stay resumable"
            )

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._stopping is not None:
            self._stopping()
        await super().shutdown(sockets=sockets)
        lifespan = getattr(self, "lifespan", None)
        shut = getattr(lifespan, "shutdown_event", None)
        if self.force_exit and lifespan is not None and shut is not None and not shut.is_set():
            # uvicorn skips the app's shutdown on a forced exit; ours closes the runtime
            # (no drain now: ``hurry`` ran) and the store, so it still runs.
            await lifespan.shutdown()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self.should_exit = True
            return
        # A second signal: stop waiting (uvicorn forces only on SIGINT, and then skips the
        # app's shutdown; ``shutdown`` above runs it).
        self.force_exit = self.hurried = True
        if self._hurry is not None and self._loop is not None:
            # A signal handler runs between two steps of the loop: the drain's cancel scope
            # is cancelled from the loop itself.
            self._loop.call_soon_threadsafe(self._hurry)

    def _listening(self) -> str:
        host, port = self.config.host, self.config.port
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                break
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def log_config() -> dict[str, Any]:
    """uvicorn's logging with every handler on stderr (its access log is on stdout by
    default): stdout carries only the command's own lines, which scripts read (the URL
    first), so a script that reads that line then stops reading cannot block the server
    once ~64 KB of access log filled the pipe."""
    import uvicorn.config

    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in config["handlers"].values():
        if "stream" in handler:
            handler["stream"] = "ext://sys.stderr"
    # Mainspring's own loggers have no handler here: Python's last resort prints their
    # warnings on stderr too.
    return config


def startup_error(app: Any) -> BaseException | None:
    """The Mainspring error the app's startup failed with (a store it could not open)."""
    found: BaseException | None = app.state.mainspring.extras.get("startup_error")
    return found


class QuietStartup:
    """The app, with a startup that fails on a Mainspring error (a store that cannot be
    opened) reported by the command in one line rather than by uvicorn as a traceback."""

    def __init__(self, app: Any) -> None:
        self.app: ASGIApp = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and startup_error(self):
                message = {**message, "message": ""}  # the command says it, in one line
            await send(message)

        await self.app(scope, receive, sending)
