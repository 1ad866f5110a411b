"""One routed call's record: what was tried, what each try used, which model comes next.

Every request routing makes (a retry, a fallback, a hedge, a cancelled loser) and
every model it passes over is one dict in ``ModelResponse.attempts``::

    {"model": "fast", "outcome": "ok" | "error" | "cancelled" | "skipped" | "degraded",
     "error": "OverloadedError" | None, "message": "...", "latency": 0.012,
     "hedge": False, "usage": {...}}  # usage when known; "degraded": True when degraded

and the answer's usage is the sum of every known usage: the winner's and the losers'.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import msgspec

from .errors import ContextTooLongError, ModelError, NoModelAvailableError
from .messages import Message, ModelResponse, Usage
from .spec import ModelSpec

TokenCounter = Callable[[Sequence[Message]], int]


def estimate_tokens(messages: Sequence[Message]) -> int:
    """About four characters of JSON per token: rough, offline, and fast."""
    return len(msgspec.json.encode(messages)) // 4 + 1


class CallLog:
    """The bookkeeping of one call through a router (never shared between calls)."""

    __slots__ = (
        "_tokens",
        "attempts",
        "count_tokens",
        "degraded",
        "messages",
        "min_window",
        "restart_reason",
        "streamed",
        "tried",
        "usages",
    )

    def __init__(self, messages: Sequence[Message], count_tokens: TokenCounter) -> None:
        self.messages = messages
        self.count_tokens = count_tokens
        self.attempts: list[dict[str, Any]] = []
        self.usages: list[Usage] = []  # every known usage, the winner's included
        self.tried: set[str] = set()
        self.min_window = 0  # a model needs at least this window (after context too long)
        self.degraded = False
        self.streamed = False  # deltas reached the caller since the last restart
        self.restart_reason: str | None = None  # a StreamRestart owed before the next delta
        self._tokens: int | None = None

    def prompt_tokens(self) -> int:
        if self._tokens is None:
            self._tokens = self.count_tokens(self.messages)
        return self._tokens

    def note(
        self,
        model: str,
        outcome: str,
        *,
        latency: float | None = None,
        error: BaseException | None = None,
        message: str = "",
        hedge: bool = False,
        usage: Usage | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "model": model,
            "outcome": outcome,
            "error": None if error is None else type(error).__name__,
            "message": message or ("" if error is None else str(error)),
            "latency": latency,
            "hedge": hedge,
        }
        if usage is not None:
            entry["usage"] = msgspec.to_builtins(usage)
            self.usages.append(usage)
        if self.degraded:
            entry["degraded"] = True
        self.attempts.append(entry)

    def estimated_input(self) -> Usage:
        """What a request cancelled before it answered is assumed to have used."""
        return Usage(input_tokens=self.prompt_tokens(), estimated=True)

    def candidates(
        self, chain: Sequence[str], specs: Mapping[str, ModelSpec]
    ) -> Iterator[tuple[str, ModelSpec]]:
        """The models of ``chain`` to call, in order, each once per call; a model whose
        window is known to be too small for the prompt is skipped (and recorded)."""
        pending = [name for name in chain if name not in self.tried]
        while pending:
            name = self._pick(pending, specs)
            pending.remove(name)
            spec = specs[name]
            window = spec.context_window
            if window is not None and window < self.min_window:
                self._skip(name, f"context window {window} is smaller than the prompt needs")
                continue
            if window is not None and self.prompt_tokens() > window:
                self._skip(
                    name, f"prompt of ~{self.prompt_tokens()} tokens exceeds window {window}"
                )
                self.min_window = max(self.min_window, self.prompt_tokens())
                continue
            self.tried.add(name)
            yield name, spec

    def _pick(self, pending: list[str], specs: Mapping[str, ModelSpec]) -> str:
        """After a context-too-long error, a model with a large enough known window goes
        first; otherwise the chain's order."""
        if self.min_window:
            for name in pending:
                window = specs[name].context_window
                if window is not None and window >= self.min_window:
                    return name
        return pending[0]

    def _skip(self, name: str, why: str) -> None:
        self.tried.add(name)
        self.note(name, "skipped", message=why)

    def failed(self, spec: ModelSpec, error: ModelError) -> None:
        """A model gave up: raise at once when no other model can help, else learn from it."""
        if not error.fallback:
            raise error
        if isinstance(error, ContextTooLongError):
            window = spec.context_window
            needed = window + 1 if window is not None else self.prompt_tokens()
            self.min_window = max(self.min_window, needed)

    def exhausted(self, name: str) -> NoModelAvailableError:
        failures = [
            f"{a['model']}: {a['error'] or a['outcome']} ({a['message']})"
            for a in self.attempts
            if a["outcome"] in ("error", "skipped")
        ]
        return NoModelAvailableError(
            f"no model could answer a call to {name!r}: " + "; ".join(failures),
            attempts=list(self.attempts),
        )

    def spent(self) -> Usage:
        """The sum of every known usage of the call so far."""
        usages = self.usages
        if len(usages) == 1 and usages[0].cost is None:
            # One attempt (most calls): its usage is the sum. Adding it to Usage() made two
            # Usages, ~3.5k instructions a call (callgrind, W12 2026-12-07).
            return usages[0]
        total = Usage()
        for usage in self.usages:
            total = total + usage
        return total

    def finish(self, response: ModelResponse, latency: float) -> ModelResponse:
        """The answer with every attempt and the sum of every known usage."""
        return msgspec.structs.replace(
            response, usage=self.spent(), attempts=self.attempts, latency=latency
        )

    def charged(self, error: ModelError) -> ModelError:
        """``error`` carrying what the call spent before it (its attempts' usage)."""
        if error.usage is None and self.usages:
            error.usage = self.spent()
        return error

    def partial_usage(self, partial_chars: int) -> Usage:
        """What a stream that broke after ``partial_chars`` characters is assumed to have used."""
        return Usage(
            input_tokens=self.prompt_tokens(),
            output_tokens=math.ceil(partial_chars / 4),
            estimated=True,
        )
