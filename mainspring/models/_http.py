"""What every HTTP provider shares: its API key, one pooled client, JSON and SSE requests.

One :class:`HTTPTransport` per provider instance holds one ``httpx.AsyncClient``
(keep-alive pool; HTTP/2 when ``h2`` is installed, used where a TLS server offers
it), so calls reuse connections instead of paying a handshake each. Keys come
from an explicit value, a secrets provider or an environment variable
(:class:`KeySource`) and are held by :class:`Secret`, which never shows its value:
not in reprs, not in errors (error bodies are masked), not in anything returned.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from ._wire_errors import error_from_event, error_from_response, error_from_transport, mask_secrets
from .errors import AuthenticationError, ModelError, OverloadedError, StreamInterruptedError
from .sse import ServerSentEvent, SSEParser

SecretsProvider = Callable[[str], "str | None"]
HAS_HTTP2 = importlib.util.find_spec("h2") is not None


class Secret:
    """An API key that does not show itself: ``repr`` and ``str`` say only whether it is set."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # pickling would copy the key out in clear
        raise TypeError("a Secret is not picklable; pass the key source instead")


@dataclass(frozen=True, slots=True, repr=False)
class KeySource:
    """Where a provider's key comes from, in order: ``explicit``, then ``secrets(env)``
    (a secrets-manager lookup by name), then the environment variable ``env``."""

    env: str
    explicit: str | None = None
    secrets: SecretsProvider | None = None

    def resolve(self) -> Secret | None:
        if self.explicit:
            return Secret(self.explicit)
        if self.secrets is not None:
            found = self.secrets(self.env)
            if found:
                return Secret(found)
        found = os.environ.get(self.env)
        return Secret(found) if found else None

    def __repr__(self) -> str:
        how = "explicit" if self.explicit else ("secrets" if self.secrets else "env")
        return f"KeySource(env={self.env!r}, from={how})"


def make_client(
    base_url: str,
    *,
    timeout: float | httpx.Timeout = 60.0,
    max_connections: int = 100,
    http2: bool | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled client for one provider: keep-alive connections, HTTP/2 where possible."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        limits=limits,
        http2=HAS_HTTP2 if http2 is None else http2,
        transport=transport,
        follow_redirects=False,
    )


class HTTPTransport:
    """One provider's connection to its API: auth headers, JSON posts and SSE streams, with
    failures translated into the ``models.errors`` tree."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        key: KeySource,
        auth: Callable[[str], dict[str, str]],
        *,
        key_required: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_connections: int = 100,
        http2: bool | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._key_source = key
        self._auth = auth
        self._key_required = key_required
        self._key: Secret | None = None
        self._extra_headers = dict(headers or {})
        self._owns_client = client is None
        self.client = client or make_client(
            self.base_url, timeout=timeout, max_connections=max_connections, http2=http2
        )

    def __repr__(self) -> str:
        return f"HTTPTransport({self.provider!r}, {self.base_url!r}, key={self._key_source!r})"

    def _headers(self, model: str) -> dict[str, str]:
        if self._key is None:
            self._key = self._key_source.resolve()
        headers = {"content-type": "application/json", **self._extra_headers}
        if self._key is not None:
            headers.update(self._auth(self._key.reveal()))
        elif self._key_required:
            raise AuthenticationError(
                f"{self.provider} model {model!r}: no API key; set {self._key_source.env}, "
                "pass api_key=, or give a secrets= provider that knows it",
                provider=self.provider,
                model=model,
            )
        return headers

    def _secret(self) -> str | None:
        return self._key.reveal() if self._key is not None else None

    def _error(self, response: httpx.Response, body: bytes, model: str) -> ModelError:
        err = error_from_response(
            response.status_code,
            response.headers,
            body,
            provider=self.provider,
            model=model,
            secret=self._secret(),
        )
        if isinstance(err, AuthenticationError):
            self._key = None  # look the key up again next time: it may have been rotated
        return err

    async def post_json(self, path: str, body: dict[str, Any], model: str) -> Any:
        """POST ``body`` as JSON and return the decoded JSON answer, or raise its error."""
        payload = msgspec.json.encode(body)
        try:
            response = await self.client.post(path, content=payload, headers=self._headers(model))
            data = await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, model, path) from None
        if response.status_code >= 300:
            raise self._error(response, data, model)
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise OverloadedError(
                f"{self.provider} model {model!r}: the answer is not JSON "
                f"({mask_secrets(data[:200].decode('utf-8', 'replace'))!r}); is base_url right?",
                provider=self.provider,
                model=model,
                status=response.status_code,
            ) from None

    async def stream_sse(
        self, path: str, body: dict[str, Any], model: str, partial: Callable[[], str]
    ) -> AsyncIterator[ServerSentEvent]:
        """POST ``body`` and yield the answer's server-sent events as they arrive.

        A failure before the first event raises its mapped error; after it, the
        connection breaking raises StreamInterruptedError with ``partial()``, the
        text the caller has assembled so far.
        """
        payload = msgspec.json.encode(body)
        headers = {**self._headers(model), "accept": "text/event-stream"}
        started = False
        try:
            async with self.client.stream("POST", path, content=payload, headers=headers) as resp:
                if resp.status_code >= 300:
                    raise self._error(resp, await resp.aread(), model)
                parser = SSEParser()
                async for chunk in resp.aiter_raw():
                    for event in parser.feed(chunk):
                        started = True
                        yield event
        except httpx.HTTPError as exc:
            if not started:
                raise self._transport_error(exc, model, path) from None
            raise interrupted(
                self.provider,
                model,
                partial(),
                f"the connection broke ({type(exc).__name__}: {exc})",
            ) from None

    def _transport_error(self, exc: httpx.HTTPError, model: str, path: str) -> ModelError:
        return error_from_transport(
            exc, provider=self.provider, model=model, url=f"{self.base_url}{path}"
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def stream_error(provider: str, model: str, data: str, partial: str | None) -> ModelError:
    """An ``error`` event in a stream: its mapped error if no delta was yielded yet
    (``partial`` is None), else StreamInterruptedError quoting it."""
    if partial is None:
        return error_from_event(data, provider=provider, model=model)
    return interrupted(provider, model, partial, f"an error event {mask_secrets(data[:500])!r}")


def interrupted(provider: str, model: str, partial: str, why: str) -> StreamInterruptedError:
    return StreamInterruptedError(
        f"{provider} model {model!r}: the stream stopped before its end: {why}; "
        f"{len(partial)} characters had arrived. Retried or fallen back from whole",
        partial=partial,
        provider=provider,
        model=model,
    )
