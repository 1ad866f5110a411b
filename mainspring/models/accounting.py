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

from .errors import ModelError
from .messages import ModelRequest, ModelResponse, Usage
from .pricing import PriceTable, price_usage
from .routing import Router
from .spec import Price
from .tokens import estimate_usage


class Accountant:
    __slots__ = ("_priced", "_prices", "_router")

    def __init__(self, router: Router, prices: PriceTable | Mapping[str, Any] | None) -> None:
        self._router = router
        if prices is None:
            self.prices = PriceTable()
        elif isinstance(prices, PriceTable):
            self.prices = prices
        else:
            self.prices = PriceTable().with_prices(prices)

    @property
    def prices(self) -> PriceTable:
        return self._prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        self._prices = table
        # name -> its price: specs and tables do not change, and every call looks its
        # model's price up (several times when routing made several attempts).
        self._priced: dict[str, Price | None] = {}

    def account(self, request: ModelRequest, response: ModelResponse) -> ModelResponse:
        """``response`` with its usage complete: counted if absent, priced if unpriced."""
        usage = response.usage
        counted = usage.input_tokens == 0 and usage.output_tokens == 0
        if counted:  # no usage reported: counted here, and priced as counted
            usage = self.counted(request, response)
        if usage.cost is None:
            cost = self._attempts_cost(response) if response.attempts and not counted else None
            if cost is None:  # request.model: the gateway model the call resolved to
                cost = self.cost(request.model, usage) or self.cost(response.model, usage)
            if cost is not None:
                usage = msgspec.structs.replace(usage, cost=cost)
        if usage is response.usage:
            return response
        return msgspec.structs.replace(response, usage=usage)

    def charge(self, request: ModelRequest, error: ModelError) -> ModelError:
        """``error`` with what the failed call spent priced (a cost budget counts it)."""
        spent = error.usage
        if spent is not None and spent.cost is None:
            cost = self.cost(request.model, spent)
            if cost is not None:
                error.usage = msgspec.structs.replace(spent, cost=cost)
        return error

    def counted(self, request: ModelRequest, response: ModelResponse) -> Usage:
        """Usage counted with the offline tokenizer (``estimated``), keeping a reported cost."""
        counted = estimate_usage(request, response)
        if response.usage.cost is not None:
            counted = msgspec.structs.replace(counted, cost=response.usage.cost)
        return counted

    def _attempts_cost(self, response: ModelResponse) -> float | None:
        """The cost of every attempt routing made (retries, fallbacks, hedges), each at
        its own model's price: one summed usage may span models of different prices."""
        total, known = 0.0, False
        for attempt in response.attempts:
            spent = attempt.get("usage")
            if type(spent) is not dict and not isinstance(spent, Mapping):  # dict: no ABC check
                continue
            price = self.price_of(str(attempt.get("model", "")))
            if price is not None:  # an unpriced model's usage is not even decoded
                total += price_usage(price, msgspec.convert(spent, Usage))
                known = True
        return total if known else None

    def price_of(self, name: str) -> Price | None:
        """The price of a gateway model (by name or alias) or of a provider model id."""
        try:
            return self._priced[name]
        except KeyError:
            price = self._priced[name] = self._look_up(name)
            return price

    def _look_up(self, name: str) -> Price | None:
        try:
            resolved = self._router.resolve(name)
        except KeyError:
            return self.prices.price(name)
        spec = self._router.spec(resolved)
        return spec.price or self.prices.price(spec.model_id(resolved))

    def cost(self, name: str, usage: Usage) -> float | None:
        price = self.price_of(name)
        return None if price is None else price_usage(price, usage)
