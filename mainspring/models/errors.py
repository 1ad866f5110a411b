"""The model gateway's errors: one tree, each saying what it means and what to do.

Providers translate HTTP statuses and error bodies into these at the boundary
(``_http.py``); routing reads ``retryable`` and ``fallback`` to decide its next
move. Every class can be rebuilt from its message alone, so a resumed run raises
the same type its live run raised (``engine.recorded.recorded_error``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MainspringError

if TYPE_CHECKING:
    from .messages import Usage


class ModelError(MainspringError):
    """A model call that did not give an answer.

    ``retryable``: the same call may succeed later (routing retries it with backoff);
    ``fallback``: another model may answer it (routing moves down the chain).
    """

    retryable = False
    fallback = True
    what_to_do = "see the message"
    # What the call spent before it failed (retries, fallbacks, repairs): accounted on the
    # effect and its budgets all the same. Set by routing and the gateway.
    usage: Usage | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status
        self.body = body


class RateLimitedError(ModelError):
    """HTTP 429: too many requests or tokens; ``retry_after`` seconds, when the provider says."""

    retryable = True
    what_to_do = "wait retry_after seconds (routing does), lower concurrency, or add a fallback"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class OverloadedError(ModelError):
    """HTTP 5xx/529: the provider is overloaded or failing; retried, then fallen back from."""

    retryable = True
    what_to_do = "retry later (routing does) or add a fallback model"


class ModelTimeoutError(ModelError, TimeoutError):
    """No answer (or no next token) within the model's timeout."""

    retryable = True
    what_to_do = "raise the model's timeout, or add a faster fallback"


class StreamInterruptedError(ModelError):
    """A stream that started, then broke before its end; ``partial`` holds the text so far."""

    retryable = True
    what_to_do = "the call is retried or falls back whole; subscribers saw a restart"

    def __init__(self, message: str, *, partial: str = "", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.partial = partial


class ContextTooLongError(ModelError):
    """The prompt does not fit the model's context window."""

    what_to_do = "shorten the messages, or add a fallback with a larger context window"


class AuthenticationError(ModelError):
    """HTTP 401/403: the API key is missing, wrong or not allowed this model."""

    fallback = False
    what_to_do = "set the provider's key (e.g. OPENAI_API_KEY) or fix its permissions"


class BadRequestError(ModelError):
    """HTTP 400/404/422: the provider refused the request as malformed."""

    fallback = False
    what_to_do = "fix the request (the message quotes the provider's reason)"


class ContentFilteredError(ModelError):
    """The provider refused to answer for its content policy."""

    fallback = False
    what_to_do = "rephrase the prompt; another provider may answer"


class OutputValidationError(ModelError):
    """The model's structured output did not validate, even after the repair attempts."""

    fallback = False
    what_to_do = "loosen the output type, raise repairs=, or use a stronger model"


class ProviderError(ModelError):
    """Any other failure of a provider (an unexpected status, an unreadable body)."""

    retryable = True
    what_to_do = "see the provider's message; retried, then fallen back from"


class NoModelAvailableError(ModelError):
    """Every model of a fallback chain failed; ``attempts`` says what each one did."""

    fallback = False
    what_to_do = "see attempts; add a fallback, raise timeouts or fix the first error"

    def __init__(self, message: str, *, attempts: list[dict[str, object]] | None = None,
                 **kw: object) -> None:  # fmt: skip
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.attempts = attempts or []


class UnknownModelError(ModelError, KeyError):
    """A model name or alias the gateway does not know."""

    fallback = False
    what_to_do = "name a model given to Gateway(models=...) or an alias of one"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BudgetExceededError(ModelError):
    """A budget (tokens, cost, calls, steps, time) would be passed by this call: stopped."""

    fallback = False
    what_to_do = "raise the budget, or choose action='fallback' or 'ask' to degrade or ask"


class LoopDetectedError(ModelError):
    """The run made the same call again and again: the loop breaker stopped it."""

    fallback = False
    what_to_do = "change the prompt or tools so the agent makes progress, or raise the limit"
