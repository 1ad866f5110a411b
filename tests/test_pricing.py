"""The price table: defaults, user prices, dated ids, and cost with cached and reasoning tokens."""

from __future__ import annotations

import pytest

from mainspring.models.messages import Usage
from mainspring.models.pricing import DEFAULT_TABLE, PriceTable, as_price, cost
from mainspring.models.spec import Price


def test_default_prices_cover_current_openai_and_anthropic_models() -> None:
    table = PriceTable()
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "o4-mini",
                  "claude-sonnet-4", "claude-opus-4-1", "claude-3-5-haiku"):  # fmt: skip
        assert model in table
    assert table["gpt-4o"] == Price(2.50, 10.0, 1.25)


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longer base wins, not gpt-4o
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ],
)
def test_dated_and_prefixed_ids_are_priced_as_their_base(model: str, base: str) -> None:
    assert DEFAULT_TABLE.price(model) == DEFAULT_TABLE[base]


def test_unknown_models_have_no_price_and_no_cost() -> None:
    assert DEFAULT_TABLE.price("my-local-llama") is None
    assert "gpt-4o-audio-preview" not in DEFAULT_TABLE  # not silently priced as gpt-4o
    assert cost("my-local-llama", Usage(10, 10)) is None
    with pytest.raises(KeyError, match="with_prices"):
        DEFAULT_TABLE["my-local-llama"]


def test_cost_prices_cached_input_and_reasoning_separately() -> None:
    table = PriceTable({"m": Price(input=2.0, output=8.0, cached_input=0.5, reasoning=20.0)})
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_tokens=400_000,
                  reasoning_tokens=100_000)  # fmt: skip
    # 600k fresh input at 2 + 400k cached at 0.5 + 400k output at 8 + 100k reasoning at 20
    assert table.cost("m", usage) == pytest.approx(1.2 + 0.2 + 3.2 + 2.0)


def test_cached_and_reasoning_default_to_input_and_output_prices() -> None:
    table = PriceTable({"m": (1.0, 4.0)}, defaults=False)
    usage = Usage(input_tokens=1000, output_tokens=1000, cached_tokens=1000, reasoning_tokens=1000)
    assert table.cost("m", usage) == pytest.approx((1000 * 1.0 + 1000 * 4.0) / 1e6)
    assert len(table) == 1


def test_user_prices_extend_and_override_and_with_prices_copies() -> None:
    table = PriceTable({"gpt-4o": Price(1.0, 2.0), "house-model": {"input": 0.1, "output": 0.2}})
    assert table["gpt-4o"] == Price(1.0, 2.0)
    assert table["gpt-4o-2024-08-06"] == Price(1.0, 2.0)
    assert table["house-model"] == Price(0.1, 0.2)
    assert table["claude-3-haiku"] == DEFAULT_TABLE["claude-3-haiku"]
    more = table.with_prices({"x": (1.0, 1.0)}, y=Price(3.0, 3.0))
    assert "x" in more and "y" in more and "x" not in table
    assert more["gpt-4o"] == Price(1.0, 2.0)


def test_wildcards_price_every_id_with_their_prefix_longest_first() -> None:
    table = PriceTable({"ft:gpt-4o*": (3.75, 15.0), "ft:gpt-4o-mini*": (0.3, 1.2)}, defaults=False)
    assert table["ft:gpt-4o-2024-08-06:org::abc"] == Price(3.75, 15.0)
    assert table["ft:gpt-4o-mini-2024-07-18:org::abc"] == Price(0.3, 1.2)


def test_priced_fills_usage_cost() -> None:
    usage = DEFAULT_TABLE.priced("gpt-4o-mini", Usage(1_000_000, 1_000_000))
    assert usage.cost == pytest.approx(0.15 + 0.60)
    unknown = Usage(1, 1)
    assert DEFAULT_TABLE.priced("nope", unknown) is unknown


def test_bad_price_values_say_what_shape_is_expected() -> None:
    with pytest.raises(ValueError, match="input, output"):
        as_price((1.0,))
    with pytest.raises(ValueError, match="cached_input"):
        as_price({"inp": 1.0})
