"""State schemas and reducers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from mainspring import StateError, append, merge
from mainspring.state import StateSchema


class Msg(BaseModel):
    role: str
    text: str


class Chat(TypedDict, total=False):
    topic: str
    messages: Annotated[list[Msg], append]
    meta: Annotated[dict[str, Any], merge]
    total: Annotated[int, lambda old, new: (old or 0) + new]


def test_reducers_fold_in_order() -> None:
    schema = StateSchema(Chat)
    s0 = schema.initial({"topic": "t"})
    s1 = schema.apply(
        s0,
        [
            ("a", {"messages": [Msg(role="u", text="hi")], "meta": {"a": 1}, "total": 2}),
            ("b", {"messages": Msg(role="a", text="yo"), "meta": {"b": 2}, "total": 3}),
        ],
    )
    assert [m.text for m in s1["messages"]] == ["hi", "yo"]
    assert s1["meta"] == {"a": 1, "b": 2}
    assert s1["total"] == 5
    assert s0 == {"topic": "t"}, "applying updates never mutates the old state"


def test_two_writers_of_a_replace_key_in_one_step_is_an_error() -> None:
    schema = StateSchema(Chat)
    with pytest.raises(StateError, match=r"nodes 'a' and 'b' both set 'topic' in the same step"):
        schema.apply({}, [("a", {"topic": "x"}), ("b", {"topic": "y"})])


def test_unknown_keys_name_the_node_and_the_fields() -> None:
    schema = StateSchema(Chat)
    with pytest.raises(
        StateError, match=r"node 'n' sets 'topik'.*known fields: messages, meta, topic, total"
    ):
        schema.check_update("n", {"topik": 1})
    with pytest.raises(StateError, match="return a dict"):
        schema.check_update("n", ["not", "a", "dict"])
    with pytest.raises(StateError, match="the input sets 'nope'"):
        schema.initial({"nope": 1})


def test_revival_turns_json_back_into_models() -> None:
    schema = StateSchema(Chat)
    revived = schema.revive_update({"messages": [{"role": "u", "text": "hi"}], "topic": "x"})
    assert revived["messages"] == [Msg(role="u", text="hi")]
    assert revived["topic"] == "x"
    assert schema.fields["topic"].reviver is None, "plain JSON types are not revived (fast path)"


def test_dataclass_state_defaults_and_required_fields() -> None:
    @dataclass
    class D:
        name: str
        items: Annotated[list[int], append] = field(default_factory=list)

    schema = StateSchema(D)
    assert schema.initial({"name": "n"}) == {"name": "n", "items": []}
    with pytest.raises(StateError, match="missing the required field 'name'"):
        schema.initial({})
    view = schema.view({"name": "n", "items": [1]})
    assert isinstance(view, D) and view.items == [1]


def test_pydantic_state_validates_input_and_updates() -> None:
    class P(BaseModel):
        n: int = 0

    schema = StateSchema(P)
    assert schema.initial({"n": "3"}) == {"n": 3}
    with pytest.raises(StateError, match="input does not fit P"):
        schema.initial({"n": "x"})
    with pytest.raises(StateError, match="node 'a' set 'n' to an invalid value"):
        schema.check_update("a", {"n": "x"})


@given(st.lists(st.lists(st.text(max_size=3), max_size=4), max_size=6))
def test_append_is_associative_concatenation(batches: list[list[str]]) -> None:
    folded: Any = None
    for b in batches:
        folded = append(folded, b)
    assert (folded or []) == [x for b in batches for x in b]


@given(st.lists(st.dictionaries(st.text(max_size=2), st.integers(), max_size=3), max_size=6))
def test_merge_matches_dict_update(updates: list[dict[str, int]]) -> None:
    folded: Any = None
    expected: dict[str, int] = {}
    for u in updates:
        folded = merge(folded, u)
        expected.update(u)
    assert (folded or {}) == expected
