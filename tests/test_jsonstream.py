"""The streaming JSON parser: partial values as text arrives, json.loads at the end, clear errors."""

from __future__ import annotations

import copy
import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring.models.jsonstream import (
    InvalidJSONError,
    PartialJSON,
    TruncatedJSONError,
    parse_partial,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def encodings(value: Any) -> st.SearchStrategy[str]:
    return st.builds(
        lambda ascii_only, indent: json.dumps(value, ensure_ascii=ascii_only, indent=indent),
        st.booleans(),
        st.sampled_from([None, 0, 2]),
    )


@st.composite
def split_documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(json_values.flatmap(encodings))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


def is_prefix(partial: Any, final: Any) -> bool:
    """``partial`` could have been read on the way to ``final``."""
    if isinstance(partial, dict):
        return (
            isinstance(final, dict)
            and list(partial) == list(final)[: len(partial)]
            and all(is_prefix(v, final[k]) for k, v in partial.items())
        )
    if isinstance(partial, list):
        if not isinstance(final, list) or len(partial) > len(final):
            return False
        *done, last = partial or [None]
        return done == final[: len(done)] and (not partial or is_prefix(last, final[len(done)]))
    if isinstance(partial, str):
        return isinstance(final, str) and final.startswith(partial)
    return type(partial) is type(final) and partial == final


def same(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)  # types too: 1 is not 1.0, key order counts


@settings(max_examples=400, deadline=None)
@given(split_documents())
def test_any_split_parses_to_json_loads_and_every_partial_is_a_prefix(
    doc: tuple[str, list[str]],
) -> None:
    text, fragments = doc
    final = json.loads(text)
    parser = PartialJSON()
    snapshots = [copy.deepcopy(parser.feed(f)) for f in fragments]
    assert same(parser.finish(), final)
    for snapshot in snapshots:
        assert snapshot is None or is_prefix(snapshot, final), (snapshot, final)


@settings(max_examples=300, deadline=None)
@given(json_values.flatmap(encodings), st.data())
def test_a_prefix_of_json_is_truncated_never_invalid(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    prefix = text[:cut]
    parser = PartialJSON()
    parser.feed(prefix)
    try:
        expected = json.loads(prefix)
    except json.JSONDecodeError:
        with pytest.raises(TruncatedJSONError):
            parser.finish()
    else:
        assert same(parser.finish(), expected)


def test_partial_values_as_an_answer_streams() -> None:
    parser = PartialJSON()
    assert parser.feed('{"title": "Hel') == {"title": "Hel"}
    assert parser.feed('lo", "n": 12') == {"title": "Hello"}  # 12 may go on: 123
    assert parser.feed(", ") == {"title": "Hello", "n": 12}
    assert parser.feed('"tags": ["a", "b') == {"title": "Hello", "n": 12, "tags": ["a", "b"]}
    assert parser.feed('c"], "ok": tr') == {"title": "Hello", "n": 12, "tags": ["a", "bc"]}
    assert parser.feed('ue, "sub": {"x": nu') == {
        "title": "Hello", "n": 12, "tags": ["a", "bc"], "ok": True, "sub": {}
    }  # fmt: skip
    assert parser.feed("ll}}") == {
        "title": "Hello", "n": 12, "tags": ["a", "bc"], "ok": True, "sub": {"x": None}
    }  # fmt: skip
    assert parser.done
    assert parser.finish()["sub"] == {"x": None}


def test_escapes_split_across_fragments() -> None:
    text = json.dumps({"s": 'a"b\\c\n\u00e9\U0001f600\ud800x'}, ensure_ascii=True)
    parser = PartialJSON()
    for c in text:
        parser.feed(c)
    assert parser.finish() == json.loads(text)


def test_a_partial_escape_is_not_shown() -> None:
    parser = PartialJSON()
    assert parser.feed('["ab\\u00') == ["ab"]
    assert parser.feed("e9") == ["ab\u00e9"]
    assert parser.feed("\\ud83d") == ["ab\u00e9"]  # half a surrogate pair: wait for the rest
    assert parser.feed('\\ude00"]') == ["ab\u00e9\U0001f600"]


def test_top_level_scalars() -> None:
    assert PartialJSON().feed('"abc') == "abc"
    number = PartialJSON()
    assert number.feed("12") is None  # not complete until a delimiter or the end
    assert number.finish() == 12
    assert parse_partial(" -1.5e3 ") == -1500.0
    assert parse_partial("nul") is None
    p = PartialJSON()
    p.feed("  true ")
    assert p.finish() is True


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"a": 1, "b": "unfinished', "inside the string value that starts at character 14"),
        ('{"a": [1, 2 ', "the array opened at character 6 is not closed"),
        ('{"a"', "expected ':'"),
        ("", "no JSON value"),
        ("   ", "no JSON value"),
        ("[1.", "inside '1.'"),
        ("-", "inside '-'"),
    ],
)
def test_truncation_says_where(text: str, says: str) -> None:
    parser = PartialJSON()
    parser.feed(text)
    with pytest.raises(TruncatedJSONError, match="ends early") as info:
        parser.finish()
    assert info.value.position == len(text)
    assert says in str(info.value)


def test_truncation_names_the_path_and_line() -> None:
    parser = PartialJSON()
    parser.feed('{\n  "items": [\n    {"name": "wid')
    with pytest.raises(TruncatedJSONError) as info:
        parser.finish()
    assert info.value.path == "$.items[0].name"
    assert (info.value.line, info.value.column) == (3, 18)


@pytest.mark.parametrize(
    ("text", "position", "says"),
    [
        ('{"a": 1,}', 8, "trailing comma"),
        ("[1, 2,]", 6, "trailing comma"),
        ('{"a" 1}', 5, "expected ':'"),
        ("[1 2]", 3, "expected ','"),
        ("[01]", 1, "invalid number '01'"),
        ("[1.]", 1, "invalid number '1.'"),
        ("{'a': 1}", 1, "expected a key string"),
        ('["a\nb"]', 3, "control character"),
        ('["\\x"]', 3, "invalid escape"),
        ('["\\u12G4"]', 6, "not a hex digit"),
        ("[tru e]", 4, "invalid literal"),
        ("[1]]", 3, "extra data"),
        ("[1}", 2, "expected ','"),
        ("Sure! Here it is", 0, "expected a value"),
        ("[NaN]", 1, "expected a value"),
    ],
)
def test_invalid_json_says_where_and_why(text: str, position: int, says: str) -> None:
    parser = PartialJSON()
    for c in text:  # fed one character at a time, to exercise every split
        parser.feed(c)
    assert isinstance(parser.error, InvalidJSONError)
    with pytest.raises(InvalidJSONError, match="invalid JSON") as info:
        parser.finish()
    assert info.value.position == position
    assert says in str(info.value)
    if "NaN" not in text:  # json.loads takes NaN; JSON does not, nor do we
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


def test_input_after_an_error_is_ignored() -> None:
    parser = PartialJSON()
    assert parser.feed('{"a": 1, "b" 2') == {"a": 1}
    assert parser.feed(', "c": 3}') == {"a": 1}
    with pytest.raises(InvalidJSONError):
        parser.finish()


def _document(size: int) -> str:
    item = {"id": 12345, "name": "a widget", "tags": ["x", "y"], "price": 9.99, "ok": True}
    n = size // len(json.dumps(item))
    return json.dumps({"items": [item] * n, "note": "z" * 100})


def _feed_time(text: str, step: int = 10) -> float:
    parser = PartialJSON()
    start = time.perf_counter()
    for i in range(0, len(text), step):
        parser.feed(text[i : i + step])
    parser.finish()
    return time.perf_counter() - start


def test_work_is_linear_in_the_input() -> None:
    small, large = _document(100_000), _document(400_000)
    t_small = min(_feed_time(small) for _ in range(3))
    t_large = min(_feed_time(large) for _ in range(3))
    assert t_small < 0.5, f"100 KB in 10-byte fragments took {t_small:.3f} s"
    assert t_large / t_small < 6, f"4x the input took {t_large / t_small:.1f}x the time"
