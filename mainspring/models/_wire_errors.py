"""Provider HTTP failures translated into the ``models.errors`` tree, at the boundary.

One function per kind of failure: :func:`error_from_response` (a status and its
body), :func:`error_from_transport` (an httpx exception: timeout, refused or cut
connection) and :func:`retry_after` (how long the provider asks us to wait). The
message quotes the provider's own reason and says what to do; anything that looks
like an API key is masked first, so no key reaches a log, a trace or the journal.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import msgspec

from .errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    ContextTooLongError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
)

_KEY_LIKE = re.compile(r"\b(sk-(?:ant-)?[A-Za-z0-9_*\-]{6})[A-Za-z0-9_*\-]+")
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_PHRASES = (
    "prompt is too long",
    "maximum context length",
    "context length",
    "context window",
    "too many tokens",
    "input is too long",
)
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
_FILTER_PHRASES = ("content management policy", "content policy", "safety system")
_OVERLOADED_STATUSES = frozenset({500, 502, 503, 504, 529})
_BODY_KEPT = 2000  # characters of an error body kept on the exception


def mask_secrets(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and anything shaped like an API key masked."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub(r"\1***", text)


def provider_reason(body: bytes | str) -> tuple[str, str]:
    """The provider's own (message, code or type) from an error body of any shape."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text.strip()[:500], ""
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, str):  # {"error": "..."} (Ollama, some proxies)
        return err, ""
    if not isinstance(err, dict):
        return text.strip()[:500], ""
    message = err.get("message") or err.get("detail") or data.get("detail") or text.strip()
    code = err.get("code") or err.get("type") or ""
    return str(message)[:1000], str(code)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    provider: str,
    model: str,
    secret: str | None = None,
) -> ModelError:
    """The error for a non-2xx answer (or an ``error`` event carrying a body)."""
    message, code = provider_reason(mask_secrets(body.decode("utf-8", "replace"), secret))
    cls, advice = _classify(status, message, code)
    said = f"{message!r}" + (f" ({code})" if code else "")
    text = f"{provider} model {model!r}: HTTP {status}: {said}; {advice}"
    kw: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "body": mask_secrets(body.decode("utf-8", "replace"), secret)[:_BODY_KEPT],
    }
    if cls is RateLimitedError:
        err = RateLimitedError(text, retry_after=retry_after(headers), **kw)
        if code == "insufficient_quota" or _larger_than_the_limit(message):
            err.retryable = False  # waiting neither refills a quota nor raises a limit
        return err
    return cls(text, **kw)


def _classify(status: int, message: str, code: str) -> tuple[type[ModelError], str]:
    lowered = message.lower()
    if code == "overloaded_error" or status in _OVERLOADED_STATUSES:
        return OverloadedError, "the provider is overloaded or failing: retry later or fall back"
    if status == 429:
        if code == "insufficient_quota":
            return RateLimitedError, "the account's quota is used up: add credits or fall back"
        if _larger_than_the_limit(message):
            return RateLimitedError, (
                "the request alone exceeds the per-minute token limit: shorten the prompt, "
                "lower max_tokens or fall back"
            )
        return RateLimitedError, "rate limited: wait retry_after seconds or lower concurrency"
    if status in (401, 403):
        return AuthenticationError, "check the API key (env var or secrets provider) and its access"
    if status == 413 or code in _CONTEXT_CODES or any(p in lowered for p in _CONTEXT_PHRASES):
        return ContextTooLongError, "shorten the prompt or fall back to a larger context window"
    if code in _FILTER_CODES or any(p in lowered for p in _FILTER_PHRASES):
        return ContentFilteredError, "the provider's content policy refused it: rephrase"
    if status == 408:
        return ModelTimeoutError, "the provider timed out: retry or raise its timeout"
    if status in (400, 404, 422):
        return BadRequestError, "fix the request (model id, parameters or messages)"
    return ProviderError, "unexpected answer from the provider: retry or fall back"


def _larger_than_the_limit(message: str) -> bool:
    """OpenAI's 429 for one request bigger than the TPM limit ("Request too large for ...")."""
    return message.lower().startswith("request too large")


_EVENT_STATUS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "context_length_exceeded": 400,
}


def error_from_event(data: str, *, provider: str, model: str) -> ModelError:
    """The error an in-stream ``error`` event stands for (its type or code gives the status)."""
    _, code = provider_reason(data)
    return error_from_response(
        _EVENT_STATUS.get(code, 500), {}, data.encode(), provider=provider, model=model
    )


def error_from_transport(
    exc: httpx.HTTPError, *, provider: str, model: str, url: str = ""
) -> ModelError:
    """The error for a request that got no answer: timed out, refused, reset."""
    where = f" at {url}" if url else ""
    kind = type(exc).__name__
    kw: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, httpx.TimeoutException):
        return ModelTimeoutError(
            f"{provider} model {model!r}{where}: {kind} ({exc}); raise the provider's timeout "
            "or add a faster fallback",
            **kw,
        )
    if isinstance(exc, httpx.ConnectError):
        return OverloadedError(
            f"{provider} model {model!r}: could not connect{where} ({kind}: {exc}); check "
            "base_url and that the server is up",
            **kw,
        )
    if isinstance(exc, httpx.TransportError):
        return OverloadedError(
            f"{provider} model {model!r}{where}: the connection failed before an answer "
            f"({kind}: {exc}); retried, then fallen back from",
            **kw,
        )
    return ProviderError(f"{provider} model {model!r}{where}: {kind}: {exc}", **kw)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, ``retry-after`` (seconds or
    an HTTP date), else the reset time of an exhausted OpenAI or Anthropic rate limit."""
    now = time.time() if now is None else now
    ms = _float(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    value = headers.get("retry-after")
    if value:
        seconds = _float(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            pass
    return _exhausted_limit_reset(headers, now)


def _exhausted_limit_reset(headers: Mapping[str, str], now: float) -> float | None:
    waits: list[float] = []
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        if headers.get(f"anthropic-ratelimit-{kind}-remaining") == "0":
            reset = headers.get(f"anthropic-ratelimit-{kind}-reset", "")
            try:  # RFC 3339, e.g. 2024-01-01T00:00:30Z
                at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
                waits.append(max(0.0, at - now))
            except ValueError:
                pass
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
            wait = duration_seconds(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if wait is not None:
                waits.append(wait)
    return max(waits) if waits else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def duration_seconds(text: str) -> float | None:
    """OpenAI's reset durations (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``) in seconds."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        return _float(text)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[unit] for n, unit in _DURATION_PART.findall(text))


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
