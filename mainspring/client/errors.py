"""The API's errors as Mainspring's exceptions: translated once, where the answer arrives.

The server answers every error as ``{"error": {"code", "message", "details"?}}``
(docs/server.md). Each code that has a Mainspring exception is raised as one that is both
that exception and a :class:`ClientError` (``except RunNotFoundError`` works the same
against a server as against a local runtime; ``except ClientError`` catches every answer
the server refused); any other code is a plain :class:`ClientError`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import httpx
import orjson

from ..errors import (
    MainspringError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    SerializationError,
    StateError,
    StoreUnavailableError,
    TenantError,
)


class ClientError(MainspringError):
    """The server refused a request, or could not be reached (``status`` 0).

    ``status`` is the HTTP status, ``code`` the API's error code (``run_not_found``,
    ``thread_busy``, ``unauthorized``, ...), ``message`` what the server said to fix.
    """

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        Exception.__init__(self, message)  # the Mainspring bases build their own messages
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class ServerUnreachableError(ClientError):
    """No answer from the server: it is not running at that address, or the network failed."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The server did not answer within the client's ``timeout``."""


class StreamLostError(ClientError):
    """A run's event stream broke and did not come back within its retries."""


class AuthError(ClientError):
    """401 (no key, an unknown or revoked key) or 403 (the key lacks the scope)."""


class NotFoundError(ClientError, LookupError):
    """No such thread or interrupt (or another tenant's): 404."""


class GraphNotFoundError(NotFoundError):
    """The server serves no graph of that name (or version)."""


class RemoteRunNotFoundError(ClientError, RunNotFoundError):
    """No run of that id (or another tenant's): ``except RunNotFoundError`` catches it."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, code, message, details)
        self.run_id = str(self.details.get("run_id", ""))


class RemoteRunExistsError(ClientError, RunExistsError):
    """A start with the id of a run started differently."""


class RemoteRunStateError(ClientError, RunStateError):
    """The run is not in a state that allows the request."""


class ThreadBusyError(ClientError, RunStateError):
    """The thread has an open run and ``multitask`` was ``reject`` (409 ``thread_busy``)."""


class RemoteTenantError(ClientError, TenantError):
    """A request that would cross tenants."""


class RemoteStateError(ClientError, StateError):
    """The input does not fit the graph's state (422 ``invalid_input``)."""


class RemoteSerializationError(ClientError, SerializationError):
    """A value the server could not store as JSON-compatible data."""


class RemoteStoreUnavailableError(ClientError, StoreUnavailableError):
    """The server's store is down (503): try again later."""


_BY_CODE: dict[str, type[ClientError]] = {
    "run_not_found": RemoteRunNotFoundError,
    "graph_not_found": GraphNotFoundError,
    "thread_not_found": NotFoundError,
    "interrupt_not_found": NotFoundError,
    "invalid_input": RemoteStateError,
    "run_exists": RemoteRunExistsError,
    "run_state": RemoteRunStateError,
    "thread_busy": ThreadBusyError,
    "tenant": RemoteTenantError,
    "invalid_value": RemoteSerializationError,
    "store_unavailable": RemoteStoreUnavailableError,
    "unauthorized": AuthError,
    "forbidden": AuthError,
}


def error_from_response(response: httpx.Response) -> ClientError:
    """The exception an error answer stands for (its body read already)."""
    status = response.status_code
    code, message, details = _CODES_BY_STATUS.get(status, "error"), "", {}
    try:
        body = orjson.loads(response.content)
        error = body.get("error") if isinstance(body, dict) else None
    except orjson.JSONDecodeError:
        error = None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        found = error.get("details")
        details = found if isinstance(found, dict) else {}
    if not message:
        text = response.text.strip()[:200]
        message = f"HTTP {status} from {response.request.url}" + (f": {text}" if text else "")
    kind = _BY_CODE.get(code, AuthError if status in (401, 403) else ClientError)
    for where in (" on this server", " in this store"):  # say which server
        url = response.request.url
        message = message.replace(where, f" on the server at {url.scheme}://{url.netloc.decode()}")
    if kind is RemoteRunNotFoundError and "run_id" not in details:
        path = response.request.url.path.split("/")  # /v1/runs/{id}/...: which run it was
        if len(path) > 3 and path[1:3] == ["v1", "runs"]:
            details = {**details, "run_id": unquote(path[3])}
    return kind(status, code, message, details)


def retry_after(response: httpx.Response, default: float = 1.0, most: float = 30.0) -> float:
    """Seconds the server asked to wait (``Retry-After``, in seconds), within reason."""
    value = response.headers.get("retry-after", "")
    try:
        return min(most, max(0.0, float(value)))
    except ValueError:
        return default


def transport_error(url: str, exc: httpx.TransportError) -> ClientError:
    """No answer to a request, said in terms of what to check (status 0: none came)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachableError(
            0,
            "unreachable",
            f"cannot reach the Mainspring server at {url} ({type(exc).__name__}: {exc}); is "
            "'mainspring serve' running there? (pass --server URL or set MAINSPRING_SERVER)",
        )
    if isinstance(exc, httpx.TimeoutException):
        return ClientTimeoutError(
            0,
            "timeout",
            f"the Mainspring server at {url} did not answer in time ({type(exc).__name__}); "
            "the request may still have been carried out: look before repeating it, or "
            "raise timeout=",
        )
    return ServerUnreachableError(
        0,
        "connection_lost",
        f"the connection to the Mainspring server at {url} broke ({type(exc).__name__}: "
        f"{exc}); the request may still have been carried out: look before repeating it",
    )


_CODES_BY_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
                    422: "invalid_request", 429: "rate_limited", 503: "unavailable"}  # fmt: skip
