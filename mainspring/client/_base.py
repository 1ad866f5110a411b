"""The one request path of the client: its connection, its errors, its retries on 429.

``ClientBase`` holds the httpx connection pool and sends every request of
:class:`~mainspring.client.aio.AsyncClient` (``_call``): JSON in and out, the API's
error answers raised as Mainspring's exceptions (``errors.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import anyio
import httpx
import orjson

from .._version import __version__
from .errors import error_from_response, retry_after, transport_error
from .stream import Reconnect

DEFAULT_SERVER = "http://127.0.0.1:8000"


def q(segment: str) -> str:
    """A path segment, escaped (a run id may hold any character)."""
    return quote(segment, safe="")


class ClientBase:
    """The connection and the request path :class:`AsyncClient` is built on (its
    arguments are documented there)."""

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
        self.base_url = (base_url or os.environ.get("MAINSPRING_SERVER") or DEFAULT_SERVER).rstrip(
            "/"
        )
        key = api_key if api_key is not None else os.environ.get("MAINSPRING_API_KEY")
        sent = {"User-Agent": f"mainspring-client/{__version__}", **(headers or {})}
        if key:
            sent["Authorization"] = f"Bearer {key}"
        self.reconnect = reconnect or Reconnect()
        self.rate_retries = rate_retries
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=sent, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one request path --------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request; its JSON answer, or the error it stands for, raised.

        A ``429`` (the key's or address's rate spent) was refused before anything was
        done, so it is sent again after the server's ``Retry-After``, ``rate_retries``
        times at most (then raised as a ClientError with code ``rate_limited``).
        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        content = None if json is None else orjson.dumps(json)
        headers = {"Content-Type": "application/json"} if content is not None else None
        for attempt in range(self.rate_retries + 1):
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=content,
                    params=query,
                    headers=headers,
                    timeout=self._timeout if timeout is None else timeout,
                )
            except httpx.TransportError as exc:
                raise transport_error(self.base_url, exc) from exc
            if response.status_code != 429 or attempt == self.rate_retries:
                break
            await anyio.sleep(retry_after(response))
        if response.status_code >= 400:
            raise error_from_response(response)
        return orjson.loads(response.content) if response.content else None

    def _wait_timeout(self, wait: bool, timeout: float | None) -> float | None:
        """A waiting request may take the server's ``timeout``: wait a little longer for it."""
        if not wait:
            return None
        return self._timeout + (60.0 if timeout is None else timeout)
