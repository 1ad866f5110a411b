"""``Client``: the same API for scripts, through one blocking portal to ``AsyncClient``.

No second copy of any request: each method is the async one, called in the portal's
event loop (``_blocking`` makes the method and keeps its signature for type checkers).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..events import Event
from .aio import AsyncClient
from .models import Run
from .stream import Reconnect, RunStream

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Awaitable[T]],
) -> Callable[Concatenate[Client, P], T]:
    """``AsyncClient.method`` as a method of ``Client``: run in the portal, same signature."""

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._portal.call(functools.partial(method, self._async, *args, **kwargs))

    call.__name__, call.__qualname__ = method.__name__, f"Client.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


def _shut(portal: BlockingPortal, client: AsyncClient, stack: ExitStack) -> None:
    try:
        portal.call(client.aclose)
    finally:
        stack.close()


class Client:
    """``with Client("http://127.0.0.1:8000") as ms: ms.run("support", {...})``.

    Takes what :class:`AsyncClient` takes; ``close()`` (or the ``with`` block's end) stops
    its event loop thread.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        reconnect: Reconnect | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_retries: int = 3,
    ) -> None:
        self._stack = ExitStack()
        self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())

        def make() -> AsyncClient:  # in the portal's loop, where it will be used
            return AsyncClient(
                base_url, api_key=api_key, timeout=timeout, reconnect=reconnect,
                headers=headers, transport=transport, rate_retries=rate_retries,
            )  # fmt: skip

        self._async = self._portal.call(make)
        self.base_url = self._async.base_url
        # Closed by close(), or when the client is dropped or the interpreter exits: a
        # script that never closes it must not hang on its loop thread at exit.
        self._finalizer = weakref.finalize(self, _shut, self._portal, self._async, self._stack)

    def __repr__(self) -> str:
        return f"<Client {self.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the event loop thread (once; later calls do nothing)."""
        self._finalizer()

    @property
    def aio(self) -> AsyncClient:
        """The async client these calls go to (use it only from the portal's loop)."""
        return self._async

    me = _blocking(AsyncClient.me)
    ready = _blocking(AsyncClient.ready)
    graphs = _blocking(AsyncClient.graphs)
    graph = _blocking(AsyncClient.graph)
    start = _blocking(AsyncClient.start)
    run = _blocking(AsyncClient.run)
    wait = _blocking(AsyncClient.wait)
    get_run = _blocking(AsyncClient.get_run)
    list_runs = _blocking(AsyncClient.list_runs)
    list_threads = _blocking(AsyncClient.list_threads)
    thread = _blocking(AsyncClient.thread)
    state = _blocking(AsyncClient.state)
    events = _blocking(AsyncClient.events)
    interrupts = _blocking(AsyncClient.interrupts)
    resume = _blocking(AsyncClient.resume)
    approve = _blocking(AsyncClient.approve)
    reject = _blocking(AsyncClient.reject)
    edit = _blocking(AsyncClient.edit)
    cancel = _blocking(AsyncClient.cancel)
    fork = _blocking(AsyncClient.fork)
    replay = _blocking(AsyncClient.replay)

    def iter_runs(self, **filters: Any) -> Iterator[Run]:
        """Every run matching the filters (those of ``list_runs``), newest first."""
        return self._iterate(lambda: self._async.iter_runs(**filters))

    def stream(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = False,
        until: Literal["park"] | None = None,
    ) -> Iterator[Event]:
        """``AsyncClient.stream`` for scripts: a plain iterator, resumed after disconnects."""

        def open_stream() -> RunStream:
            return self._async.stream(run_id, after=after, tokens=tokens, until=until)

        return self._iterate(open_stream)

    def _iterate(self, make: Callable[[], Any]) -> Iterator[Any]:
        iterator = self._portal.call(make)  # built in the loop: async generators live there
        try:
            while True:
                try:
                    item = self._portal.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._portal.call(iterator.aclose)
