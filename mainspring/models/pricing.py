"""What a call cost: a price table from model ids to :class:`~.spec.Price`, per million tokens.

``PriceTable()`` knows the current OpenAI and Anthropic models (list prices in USD,
standard tier, as published in 2025); ``PriceTable({"my-model": Price(1, 2)})`` adds
to (or overrides) them, ``defaults=False`` starts empty, and ``table.with_prices(...)``
makes an extended copy. A dated or versioned id (``gpt-4o-2024-08-06``,
``claude-sonnet-4-20250514``, ``openai/gpt-4o``) is priced as its base model; an entry
ending in ``*`` prices every id that starts with what comes before it.

Anthropic's cache writes (1.25x input) are not in :class:`~.messages.Usage`, so they are
priced as ordinary input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TypeAlias

from .messages import Usage
from .spec import Price

PriceLike: TypeAlias = "Price | tuple[float, ...] | Mapping[str, float]"

_M = 1_000_000.0

# (input, output, cached input); reasoning is billed as output by both providers.
_DEFAULTS: dict[str, tuple[float, float, float | None]] = {
    # OpenAI
    "gpt-5": (1.25, 10.0, 0.125),
    "gpt-5-mini": (0.25, 2.0, 0.025),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-4.1": (2.0, 8.0, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4o": (2.50, 10.0, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "chatgpt-4o-latest": (5.0, 15.0, None),
    "gpt-4-turbo": (10.0, 30.0, None),
    "gpt-4": (30.0, 60.0, None),
    "gpt-3.5-turbo": (0.50, 1.50, None),
    "o1": (15.0, 60.0, 7.50),
    "o1-mini": (1.10, 4.40, 0.55),
    "o3": (2.0, 8.0, 0.50),
    "o3-mini": (1.10, 4.40, 0.55),
    "o4-mini": (1.10, 4.40, 0.275),
    "text-embedding-3-small": (0.02, 0.0, None),
    "text-embedding-3-large": (0.13, 0.0, None),
    "text-embedding-ada-002": (0.10, 0.0, None),
    # Anthropic (cache reads at 0.1x input)
    "claude-opus-4-5": (5.0, 25.0, 0.50),
    "claude-opus-4-1": (15.0, 75.0, 1.50),
    "claude-opus-4": (15.0, 75.0, 1.50),
    "claude-sonnet-4-5": (3.0, 15.0, 0.30),
    "claude-sonnet-4": (3.0, 15.0, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 0.10),
    "claude-3-7-sonnet": (3.0, 15.0, 0.30),
    "claude-3-5-sonnet": (3.0, 15.0, 0.30),
    "claude-3-5-haiku": (0.80, 4.0, 0.08),
    "claude-3-opus": (15.0, 75.0, 1.50),
    "claude-3-haiku": (0.25, 1.25, 0.03),
}

DEFAULT_PRICES: Mapping[str, Price] = {
    model: Price(inp, out, cached) for model, (inp, out, cached) in _DEFAULTS.items()
}

# A release date or version after the base id: -2024-08-06, -20250514, @20241022, -latest,
# -v1:0 (Bedrock), -v1 ...
_VERSION_SUFFIX = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|latest|v\d+(?::\d+)?))+$")
# Where a gateway or cloud puts the provider: openai/gpt-4o, anthropic.claude-3-haiku-...
_PROVIDER_PREFIX = re.compile(r"^(?:[a-z0-9_-]+/|(?:us\.|eu\.|apac\.)?anthropic\.)")


def as_price(value: PriceLike) -> Price:
    """A price from a :class:`Price`, ``(input, output[, cached_input[, reasoning]])`` or a
    mapping with those names."""
    if isinstance(value, Price):
        return value
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise ValueError(
                f"a price tuple is (input, output[, cached_input[, reasoning]]), not {value!r}"
            )
        return Price(*value)
    try:
        return Price(**value)
    except TypeError:
        raise ValueError(
            f"a price mapping has keys input, output, cached_input, reasoning; got {dict(value)!r}"
        ) from None


class PriceTable(Mapping[str, Price]):
    """Model id -> :class:`Price` (per million tokens), with dated ids priced as their base."""

    def __init__(
        self, prices: Mapping[str, PriceLike] | None = None, *, defaults: bool = True
    ) -> None:
        table: dict[str, Price] = dict(DEFAULT_PRICES) if defaults else {}
        for model, value in (prices or {}).items():
            table[model] = as_price(value)
        self._exact = table
        # Longest first, so "gpt-4o-mini*" wins over "gpt-4o*".
        self._wildcards = sorted(
            ((m[:-1], p) for m, p in table.items() if m.endswith("*")),
            key=lambda item: -len(item[0]),
        )
        self._resolved: dict[str, Price | None] = {}

    def with_prices(
        self, prices: Mapping[str, PriceLike] | None = None, **more: PriceLike
    ) -> PriceTable:
        """A copy with ``prices`` (and ``model=price`` keywords) added or overriding."""
        return PriceTable({**self._exact, **(prices or {}), **more}, defaults=False)

    def price(self, model: str) -> Price | None:
        """The price of ``model``, or None when the table does not know it."""
        try:
            return self._resolved[model]
        except KeyError:
            found = self._resolved[model] = self._resolve(model)
            return found

    def _resolve(self, model: str) -> Price | None:
        candidates = [model]
        base = _PROVIDER_PREFIX.sub("", model)
        for name in (model, base):
            stripped = _VERSION_SUFFIX.sub("", name)
            candidates += [name, stripped]
        for name in candidates:
            if name in self._exact:
                return self._exact[name]
        for prefix, price in self._wildcards:
            if any(name.startswith(prefix) for name in candidates):
                return price
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """What ``usage`` cost on ``model``; None when the model has no price."""
        price = self.price(model)
        return None if price is None else price_usage(price, usage)

    def priced(self, model: str, usage: Usage) -> Usage:
        """``usage`` with its ``cost`` filled in (left as it was when the model is unknown)."""
        cost = self.cost(model, usage)
        if cost is None:
            return usage
        return Usage(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
            cost,
            usage.estimated,
        )

    def __getitem__(self, model: str) -> Price:
        price = self.price(model)
        if price is None:
            raise KeyError(
                f"no price for model {model!r}; add one with PriceTable({{{model!r}: "
                "Price(input, output)}) or .with_prices(...)"
            )
        return price

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable({len(self._exact)} models)"


def price_usage(price: Price, usage: Usage) -> float:
    """Dollars for ``usage`` at ``price``: cached input and reasoning at their own prices
    when the price sets them (they are parts of input and output tokens)."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    reasoning_price = price.output if price.reasoning is None else price.reasoning
    return (
        (usage.input_tokens - cached) * price.input
        + cached * cached_price
        + (usage.output_tokens - reasoning) * price.output
        + reasoning * reasoning_price
    ) / _M


DEFAULT_TABLE = PriceTable()


def cost(model: str, usage: Usage, table: PriceTable = DEFAULT_TABLE) -> float | None:
    """What ``usage`` cost on ``model`` by ``table`` (the default prices unless given)."""
    return table.cost(model, usage)
