"""Structured output: strict schemas, JSON found in prose, clear errors, and the repair loop."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import pytest

from mainspring.models.errors import OutputValidationError
from mainspring.models.messages import Message, ModelResponse, Usage, assistant, user
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.structured import (
    StructuredOutputError,
    complete_structured,
    extract_json,
    output_spec,
    parse_output,
)

pytestmark = pytest.mark.anyio


class Item(pydantic.BaseModel):
    name: str
    price: float = pydantic.Field(description="in dollars")
    quantity: int = 1


class Invoice(pydantic.BaseModel):
    customer: str
    status: Literal["draft", "sent"]
    items: list[Item]
    note: str | None = None


class Node(pydantic.BaseModel):
    label: str
    children: list[Node] = []


def closed_objects(schema: Any) -> list[dict[str, Any]]:
    """Every object schema inside ``schema``."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append(schema)
        for value in schema.values():
            found += closed_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            found += closed_objects(value)
    return found


def test_output_spec_is_fit_for_strict_mode() -> None:
    spec = output_spec(Invoice)
    assert spec.name == "Invoice" and spec.strict
    assert "$defs" not in spec.schema and "$ref" not in str(spec.schema)  # Item inlined
    objects = closed_objects(spec.schema)
    assert len(objects) == 2
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])  # defaults too: strict wants all
    assert "default" not in str(spec.schema)
    item = spec.schema["properties"]["items"]["items"]
    assert item["properties"]["price"]["description"] == "in dollars"


def test_recursive_types_keep_their_reference() -> None:
    spec = output_spec(Node)
    assert spec.schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert spec.schema["$defs"]["Node"]["additionalProperties"] is False
    assert parse_output(Node, '{"label": "a", "children": [{"label": "b", "children": []}]}') == (
        Node(label="a", children=[Node(label="b")])
    )


def test_free_form_maps_are_not_strict() -> None:
    class Scores(pydantic.BaseModel):
        by_name: dict[str, int]

    assert output_spec(Scores).strict is False


def test_non_object_types_are_wrapped_and_unwrapped() -> None:
    spec = output_spec(list[int])
    assert spec.schema["required"] == ["value"]
    assert spec.schema["properties"]["value"]["type"] == "array"
    assert parse_output(list[int], '{"value": [1, 2, 3]}') == [1, 2, 3]
    assert parse_output(list[int], "[4, 5]") == [4, 5]


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        'Here you go:\n```json\n{"a": 1}\n```\nAnything else?',
        '```\n{"a": 1}\n```',
        'Sure! The answer is {"a": 1}. Hope that helps {not json}.',
        'I think {broken} but then: {"a": 1}',
    ],
)
def test_json_is_found_in_fences_and_prose(text: str) -> None:
    assert extract_json(text) == {"a": 1}


def test_validation_errors_list_every_problem() -> None:
    text = '{"customer": "ACME", "status": "paid", "items": [{"name": "x", "price": "abc"}, {}]}'
    with pytest.raises(OutputValidationError) as info:
        parse_output(Invoice, text)
    error = info.value
    assert isinstance(error, StructuredOutputError)
    assert "does not match Invoice" in str(error)
    joined = "\n".join(error.errors)
    assert "status: Input should be 'draft' or 'sent'" in joined
    assert "items.0.price" in joined and '"abc"' in joined
    assert "items.1.name: Field required" in joined
    assert error.text == text
    assert type(error)(str(error)).args == error.args  # buildable from its message alone


def test_no_json_at_all_says_so() -> None:
    with pytest.raises(StructuredOutputError, match="no JSON object or array"):
        parse_output(Item, "I cannot help with that.")


def test_a_schema_dict_is_checked_without_pydantic() -> None:
    schema = {
        "title": "Answer",
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "rank": {"type": "integer", "minimum": 1},
            "kind": {"enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "rank"],
        "additionalProperties": False,
    }
    spec = output_spec(schema)
    assert spec.name == "Answer" and spec.schema["required"] == ["city", "rank", "kind", "tags"]
    assert parse_output(schema, '{"city": "Oslo", "rank": 3}') == {"city": "Oslo", "rank": 3}
    with pytest.raises(StructuredOutputError) as info:
        parse_output(schema, '{"city": "O", "rank": 0, "kind": "c", "tags": [1], "x": true}')
    assert info.value.errors == [
        "city: should have at least 2 characters (has 1)",
        "rank: should be at least 1 (got 0)",
        "kind: should be one of ['a', 'b'] (got 'c')",
        "tags.0: should be string (got 1)",
        "x: is not allowed (no such property)",
    ]


GOOD = '{"name": "widget", "price": 2.5}'


async def test_valid_output_is_returned_in_one_attempt() -> None:
    model = ScriptedModel(["```json\n" + GOOD + "\n```"])
    item, response, attempts = await complete_structured(
        lambda ms: model.complete(_request(ms)), [user("an item")], Item
    )
    assert item == Item(name="widget", price=2.5)
    assert attempts == 1
    assert response.output == {"name": "widget", "price": 2.5, "quantity": 1}


async def test_invalid_output_is_repaired_with_the_errors_quoted() -> None:
    model = ScriptedModel(['{"name": "widget"}', "not json", GOOD], cycle=False)
    item, response, attempts = await complete_structured(
        lambda ms: model.complete(_request(ms)), [user("an item")], Item, repairs=2
    )
    assert item.price == 2.5 and attempts == 3
    second = model.calls[1].messages
    assert second[1] == assistant('{"name": "widget"}')
    assert "price: Field required" in second[2].text
    assert "only the corrected JSON" in second[2].text
    third = model.calls[2].messages
    assert len(third) == 5 and "no JSON object or array" in third[4].text
    assert response.usage.output_tokens == 2 + 2 + 4  # every attempt's usage, summed


async def test_repairs_are_bounded_and_the_last_errors_raised() -> None:
    model = ScriptedModel(['{"name": 1}'])
    calls: list[list[Message]] = []

    async def call(messages: list[Message]) -> ModelResponse:
        calls.append(messages)
        response = await model.complete(_request(messages))
        return ModelResponse(response.message, usage=Usage(10, 5))

    with pytest.raises(OutputValidationError) as info:
        await complete_structured(call, [user("an item")], Item, repairs=1)
    error = info.value
    assert isinstance(error, StructuredOutputError)
    assert len(calls) == 2 and error.attempts == 2
    assert str(error).startswith("after 2 attempts, the model's output does not match Item")
    assert any(e.startswith("name: Input should be a valid string") for e in error.errors)
    assert error.usage == Usage(20, 10)


async def test_zero_repairs_means_one_call() -> None:
    model = ScriptedModel(["nope"])
    with pytest.raises(StructuredOutputError):
        await complete_structured(lambda ms: model.complete(_request(ms)), [], Item, repairs=0)
    assert len(model.calls) == 1


async def test_output_already_parsed_by_the_provider_is_validated() -> None:
    async def call(messages: list[Message]) -> ModelResponse:
        return ModelResponse(Message("assistant"), output={"name": "w", "price": 1})

    item, _, _ = await complete_structured(call, [user("x")], Item)
    assert item == Item(name="w", price=1.0)


def _request(messages: list[Message]) -> Any:
    from mainspring.models.messages import ModelRequest

    return ModelRequest("scripted", messages)
