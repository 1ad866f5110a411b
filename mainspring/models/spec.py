"""How a gateway knows its models: a name, the provider behind it, and its limits.

``Gateway(models={"fast": ModelSpec(OpenAIChat(...), "gpt-4o-mini", timeout=10,
fallbacks=("big",))}, aliases={"router": "fast"})``. Made once per process: plain
frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import ModelProvider


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars (or the table's currency) per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # defaults to ``input``
    reasoning: float | None = None  # defaults to ``output``


@dataclass(frozen=True, slots=True)
class Hedge:
    """Send a second request when the first is slower than the ``quantile`` of the latency
    seen so far (at least ``min_delay`` seconds; ``delay`` fixes it); the first answer
    wins and the other is cancelled. ``max_extra`` caps the share of calls hedged."""

    quantile: float = 0.95
    delay: float | None = None
    min_delay: float = 0.001
    max_extra: float = 0.1
    warmup: int = 20  # calls observed before the quantile is trusted


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One named model: its provider, the provider's model id, and how to call it."""

    provider: ModelProvider
    model: str = ""  # the provider's model id; the spec's name when empty
    timeout: float | None = 60.0  # seconds for a whole call
    first_token_timeout: float | None = None  # seconds to the first streamed delta
    retries: int = 2  # retries of a retryable error, with backoff (retry-after honoured)
    backoff: float = 0.5  # first backoff in seconds, doubled per retry, with jitter
    max_backoff: float = 20.0
    fallbacks: tuple[str, ...] = ()  # other models, tried in order when this one fails
    context_window: int | None = None  # tokens; a longer prompt goes to a fallback first
    max_output_tokens: int | None = None
    price: Price | None = None
    hedge: Hedge | None = None
    params: dict[str, Any] = field(default_factory=dict)  # defaults for every request

    def model_id(self, name: str) -> str:
        return self.model or name
