"""The PostgreSQL item store's own parts: tables shared by many workers, the change feed,
schema and prefix isolation, tenants, and metadata filters in SQL meaning what they mean
in Python (a property test against ``filters.matches``).

The behaviour every item store shares is in ``tests/test_semantic_memory.py``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.errors import NotAStoreError
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.filters import matches, parse_filters
from mainspring.memory.semantic.items import MemoryItem, Source
from mainspring.memory.semantic.postgres import PostgresItemStore
from mainspring.store.postgres import PostgresStore
from tests.conftest import postgres_schema_url

pytestmark = pytest.mark.anyio

T1 = Scope("t1", "alice", "helper")


def _item(id: str, text: str = "a fact", scope: Scope = T1, **fields: Any) -> MemoryItem:
    return MemoryItem(id=id, text=text, scope=scope, recorded_at=1.0, updated_at=1.0, **fields)


def _vec(seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with postgres_schema_url() as url:
        yield url


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresItemStore]:
    async with await PostgresItemStore.open(url) as store:
        yield store


async def test_items_round_trip_with_every_field(store: PostgresItemStore) -> None:
    item = _item(
        "a",
        "The user lives in Paris",
        metadata={"kind": "fact", "n": 2, "tags": ["x", "y"], "nested": {"k": None}},
        key="user.city",
        valid_from=10.5,
        valid_to=None,
        accessed_at=3.25,
        source=Source("doc.md", title="Doc", chunk=3, start=10, end=20, heading="A > B"),
        indexed=True,
    )
    await store.put([item], [_vec(1)])
    assert await store.get(["a", "missing"], tenant="t1") == [item]
    assert await store.get(["a"], tenant="t2") == []  # scoped by tenant
    assert await store.list(Scope("t1")) == [item]
    assert await store.list(Scope("t1", user="bob")) == []


async def test_list_pages_by_id_and_hides_superseded_items(store: PostgresItemStore) -> None:
    items = [_item(f"i{n:02}") for n in range(7)] + [_item("old", superseded_by="i00")]
    await store.put(items, [None] * len(items))
    first = await store.list(T1, limit=3)
    rest = await store.list(T1, limit=10, after=first[-1].id)
    assert [i.id for i in first + rest] == [f"i{n:02}" for n in range(7)]
    every = await store.list(T1, include_superseded=True, limit=100)
    assert "old" in {i.id for i in every}


async def test_keyword_search_matches_any_word_ranks_and_scopes(store: PostgresItemStore) -> None:
    await store.put(
        [
            _item("paris", "The user moved to Paris in spring"),
            _item("cats", "The user has two cats and a dog", metadata={"pets": True}),
            _item("bob", "Bob moved to Paris too", scope=Scope("t1", "bob")),
            _item("other", "Paris Paris Paris", scope=Scope("t2", "alice")),
            _item("gone", "The user lived in Paris", superseded_by="paris"),
        ],
        [None] * 5,
    )
    hits = await store.keyword("where did the user move?", T1, filters=None, limit=10)
    # Stemmed (move ~ moved), ranked (two words beat one), superseded items hidden.
    assert [h[0] for h in hits] == ["paris", "cats"] and hits[0][1] > hits[1][1]
    hits = await store.keyword("paris cat", Scope("t1"), filters=None, limit=10)
    assert {h[0] for h in hits} == {"paris", "cats", "bob"}
    assert all(score > 0 for _, score in hits)
    filtered = await store.keyword("paris cat", T1, filters={"pets": True}, limit=10)
    assert [h[0] for h in filtered] == ["cats"]
    assert await store.keyword("the and of", T1, filters=None, limit=10) == []  # stop words
    assert await store.keyword("   ", T1, filters=None, limit=10) == []


async def test_the_change_feed_has_one_row_per_id_with_its_current_vector(
    store: PostgresItemStore,
) -> None:
    await store.put([_item("a"), _item("b")], [_vec(1), _vec(2)])
    mark, changes = await store.changes(0, 100)
    assert [c[0] for c in changes] == ["a", "b"]
    np.testing.assert_array_equal(changes[0][1], _vec(1))
    # A metadata change of an indexed item keeps its vector and adds no change.
    await store.put([_item("a", metadata={"x": 1}, indexed=True)], [None])
    assert await store.changes(mark, 100) == (mark, [])
    # A new vector, then a text change that clears it: one row for "a", at the end.
    await store.put([_item("a", indexed=True)], [_vec(3)])
    await store.put([_item("a", "new text", indexed=False)], [None])
    mark2, changes = await store.changes(mark, 100)
    assert changes == [("a", None)] and mark2 > mark
    assert await store.delete(["b", "nope"], tenant="t1") == 1
    _, changes = await store.changes(mark2, 100)
    assert changes == [("b", None)]
    _, everything = await store.changes(0, 100)
    assert [c[0] for c in everything] == ["a", "b"]  # compacted: a reader from 0 rebuilds


async def test_two_workers_share_items_and_wake_each_other(url: str) -> None:
    async with (
        await PostgresItemStore.open(url) as one,
        await PostgresItemStore.open(url) as two,
    ):
        mark, _ = await two.changes(0, 10)
        await one.put([_item("x", "shared fact")], [_vec(7)])
        with anyio.fail_after(10):
            assert await two.wait_for_changes(10)
        _, changes = await two.changes(mark, 10)
        assert [c[0] for c in changes] == ["x"]
        assert [i.id for i in await two.get(["x"], tenant="t1")] == ["x"]
        assert [h[0] for h in await two.keyword("fact", T1, filters=None, limit=5)] == ["x"]
        assert not await two.wait_for_changes(0.05)  # nothing new since


async def test_a_reader_polling_during_concurrent_writes_misses_nothing(url: str) -> None:
    """Change numbers commit in order, so a reader never skips past an uncommitted one."""
    async with (
        await PostgresItemStore.open(url, max_size=4) as one,
        await PostgresItemStore.open(url, max_size=4) as two,
        await PostgresItemStore.open(url) as reader,
    ):
        seen: dict[str, bool] = {}
        since = 0
        writing = True

        async def writer(store: PostgresItemStore, name: str) -> None:
            for n in range(30):
                await store.put([_item(f"{name}-{n}")], [_vec(n)])

        async def read() -> None:
            nonlocal since
            while writing:
                since, changes = await reader.changes(since, 7)
                seen.update((i, v is not None) for i, v in changes)
                await anyio.sleep(0)

        async with anyio.create_task_group() as readers:
            readers.start_soon(read)
            async with anyio.create_task_group() as writers:
                for w in range(6):
                    writers.start_soon(writer, one if w % 2 else two, f"w{w}")
            writing = False
        while True:
            since, changes = await reader.changes(since, 100)
            if not changes:
                break
            seen.update((i, v is not None) for i, v in changes)
        assert len(seen) == 180 and all(seen.values())


async def test_concurrent_opens_of_a_new_schema_do_not_race(url: str) -> None:
    stores: list[PostgresItemStore] = []

    async def open_one() -> None:
        stores.append(await PostgresItemStore.open(url, min_size=1))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(open_one)
        await stores[0].put([_item("a")], [None])
        assert [i.id for i in await stores[-1].list(T1)] == ["a"]
    finally:
        for s in stores:
            await s.aclose()
    # The schema is a Mainspring one: the journal store opens on it as it is.
    async with PostgresStore(url) as journal:
        assert await journal.get_run("nothing") is None


async def test_schemas_and_prefixes_are_isolated(url: str) -> None:
    async with (
        postgres_schema_url() as other_url,
        await PostgresItemStore.open(url) as a,
        await PostgresItemStore.open(other_url) as b,
        await PostgresItemStore.open(url, table_prefix="notes_") as c,
    ):
        await a.put([_item("x")], [_vec(1)])
        assert await b.list(T1) == [] and await c.list(T1) == []
        assert await b.changes(0, 10) == (0, []) and await c.changes(0, 10) == (0, [])
        assert not await c.wait_for_changes(0.2)  # a's notification names a's tables


async def test_an_id_stays_in_its_tenant(store: PostgresItemStore) -> None:
    await store.put([_item("x", "mine")], [None])
    with pytest.raises(ValueError, match="another tenant"):
        await store.put([_item("x", "theirs", scope=Scope("t2"))], [None])
    assert [i.text for i in await store.get(["x"], tenant="t1")] == ["mine"]
    assert await store.delete(["x"], tenant="t2") == 0


async def test_a_foreign_schema_is_refused_untouched(url: str) -> None:
    base, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".theirs (x int)')
    finally:
        await conn.close()
    with pytest.raises(NotAStoreError):
        await PostgresItemStore.open(url)


async def test_bad_arguments_say_what_to_fix(url: str, store: PostgresItemStore) -> None:
    with pytest.raises(ValueError, match="table_prefix"):
        PostgresItemStore(url, table_prefix="Bad-Prefix")
    with pytest.raises(ValueError, match="2 items but 1 vectors"):
        await store.put([_item("a"), _item("b")], [None])
    with pytest.raises(ValueError, match="unknown filter operator"):
        await store.list(T1, filters={"n": {"$regex": "x"}})
    with pytest.raises(TypeError, match="compares numbers or strings"):
        await store.keyword("x", T1, filters={"n": {"$gt": [1]}}, limit=3)
    with pytest.raises(ValueError, match="limit"):
        await store.list(T1, limit=0)


# -- filters: SQL means what Python means ------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, -2.5]),
    st.sampled_from(["", "a", "b", "B", "é", "10", "9"]),
    st.lists(st.integers(0, 2), max_size=2),
)
_FIELDS = ["n", "s", "x"]


def _dataset() -> list[dict[str, Any]]:
    rng = random.Random(14)
    pool: list[Any] = [None, True, False, 0, 1, 2, -3, 0.5, 1.0, "", "a", "b", "B", "é", "10"]
    pool += ["9", [0], [1, 2], {"k": 1}]
    rows = []
    for _ in range(80):
        rows.append({f: rng.choice(pool) for f in _FIELDS if rng.random() < 0.7})
    return rows


_OPERATOR = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"])


@st.composite
def _filters(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=2, unique=True)):
        op = draw(_OPERATOR)
        if op == "$in":
            out[field] = {op: draw(st.lists(_VALUES, max_size=3))}
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            bound = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, "a", "B", "10"]))
            out[field] = {op: draw(bound)}
        elif op == "$eq" and draw(st.booleans()):
            out[field] = draw(_VALUES)  # the bare form
        else:
            out[field] = {op: draw(_VALUES)}
    return out


@pytest.fixture
async def filtered(store: PostgresItemStore) -> PostgresItemStore:
    rows = _dataset()
    items = [_item(f"m{n:03}", metadata=m) for n, m in enumerate(rows)]
    await store.put(items, [None] * len(items))
    return store


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_filters())
async def test_metadata_filters_in_sql_agree_with_python(
    filtered: PostgresItemStore, spec: dict[str, Any]
) -> None:
    conditions = parse_filters(spec)
    rows = _dataset()
    expected = [f"m{n:03}" for n, m in enumerate(rows) if matches(conditions, m)]
    got = [i.id for i in await filtered.list(T1, filters=spec, limit=1000)]
    assert got == expected, spec
