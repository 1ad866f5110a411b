"""Accounting: every response leaves the gateway with its tokens and its cost.

Tokens come from the provider's usage; when a provider reports none (some local
servers), they are counted with the offline tokenizer and marked ``estimated``.
Cost comes from the model's own ``ModelSpec.price``, else the price table (which
the user extends), priced by the provider's model id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .messages import ModelRequest, ModelResponse, Usage
from .pricing import PriceTable
from .routing import Router
from .spec import Price
from .tokens import count_message_tokens, count_tokens


class Accountant:
    __slots__ = ("_router", "prices")

    def __init__(self, router: Router, prices: PriceTable | Mapping[str, Any] | None) -> None:
        self._router = router
        if prices is None:
            self.prices = PriceTable()
        elif isinstance(prices, PriceTable):
            self.prices = prices
        else:
            self.prices = PriceTable().with_prices(prices)

    def account(self, request: ModelRequest, response: ModelResponse) -> ModelResponse:
        """``response`` with its usage complete: counted if absent, priced if unpriced."""
        usage = response.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            usage = self.counted(request, response)
        if usage.cost is None:
            cost = self.cost(response.model or request.model, usage)
            if cost is not None:
                usage = msgspec.structs.replace(usage, cost=cost)
        if usage is response.usage:
            return response
        return msgspec.structs.replace(response, usage=usage)

    def counted(self, request: ModelRequest, response: ModelResponse) -> Usage:
        model = response.model or request.model
        out = count_tokens(response.text, model) + sum(
            count_tokens(msgspec.json.encode(c.arguments).decode(), model)
            for c in response.tool_calls
        )
        return msgspec.structs.replace(
            response.usage,
            input_tokens=count_message_tokens(request.messages, model),
            output_tokens=out,
            estimated=True,
        )

    def price_of(self, name: str) -> Price | None:
        """The price of a gateway model (by name or alias) or of a provider model id."""
        try:
            resolved = self._router.resolve(name)
        except KeyError:
            return self.prices.price(name)
        spec = self._router.spec(resolved)
        return spec.price or self.prices.price(spec.model_id(resolved))

    def cost(self, name: str, usage: Usage) -> float | None:
        price = self.price_of(name)
        return None if price is None else self.prices.cost_at(price, usage)
