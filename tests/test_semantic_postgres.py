"""The PostgreSQL item store's own parts: tables shared by many workers, the change feed,
schema and prefix isolation, tenants, and metadata filters in SQL meaning what they mean
in Python (a property test against ``filters.matches``).

The behaviour every item store shares is in ``tests/test_semantic_memory.py``.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.errors import NotAStoreError, StoreError
from mainspring.memory.scope import Scope
from mainspring.memory.semantic import SemanticMemory
from mainspring.memory.semantic.filters import all_hold, parse_filters
from mainspring.memory.semantic.items import MemoryItem, Source, text_digest
from mainspring.memory.semantic.postgres import PostgresItemStore
from mainspring.memory.semantic.protocols import Selection
from mainspring.models.embeddings_local import LocalEmbeddings
from mainspring.store.postgres import PostgresStore
from tests.conftest import PG_URL, postgres_schema_url

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
    assert await store.list(Selection(Scope("t1"))) == [item]
    assert await store.list(Selection(Scope("t1", user="bob"))) == []
    # indexed reads back whether a vector is stored, whatever the item said.
    await store.put([msgspec.structs.replace(item, id="b", indexed=True)], [None])
    assert [i.indexed for i in await store.list(Selection(T1))] == [True, False]


async def test_list_pages_by_id_and_hides_superseded_items(store: PostgresItemStore) -> None:
    items = [_item(f"i{n:02}") for n in range(7)] + [_item("old", superseded_by="i00")]
    await store.put(items, [None] * len(items))
    first = await store.list(Selection(T1), limit=3)
    rest = await store.list(Selection(T1), limit=10, after=first[-1].id)
    assert [i.id for i in first + rest] == [f"i{n:02}" for n in range(7)]
    every = await store.list(Selection(T1, live_only=False), limit=100)
    assert "old" in {i.id for i in every}
    assert sorted(await store.ids(Selection(T1), limit=100)) == [i.id for i in first + rest]
    assert len(await store.ids(Selection(T1), limit=2)) == 2


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
    hits = await store.keyword("where did the user move?", Selection(T1), limit=10)
    # Stemmed (move ~ moved), ranked (two words beat one), superseded items hidden.
    assert [h[0] for h in hits] == ["paris", "cats"] and hits[0][1] > hits[1][1]
    hits = await store.keyword("paris cat", Selection(Scope("t1")), limit=10)
    assert {h[0] for h in hits} == {"paris", "cats", "bob"}
    assert all(score > 0 for _, score in hits)
    pets = Selection(T1, filters=parse_filters({"pets": True}))
    filtered = await store.keyword("paris cat", pets, limit=10)
    assert [h[0] for h in filtered] == ["cats"]
    assert await store.keyword("the and of", Selection(T1), limit=10) == []  # stop words
    assert await store.keyword("   ", Selection(T1), limit=10) == []


async def test_keyword_search_leaves_out_words_common_in_the_table(url: str) -> None:
    async with await PostgresItemStore.open(url) as store:
        items = [_item(f"w{n:03}", f"widget number {n}") for n in range(300)]
        await store.put([*items, _item("gizmo", "a unique gizmo")], [None] * 301)
        conn = await asyncpg.connect(url.partition("?")[0])
        try:
            schema = url.partition("schema=")[2]
            await conn.execute(f'ANALYZE "{schema}".memory_items')  # what autovacuum does
        finally:
            await conn.close()
    async with await PostgresItemStore.open(url) as store:
        # "widget" is in nearly every row: the rare word decides, and fast.
        hits = await store.keyword("widget gizmo", Selection(T1), limit=5)
        assert [h[0] for h in hits] == ["gizmo"]
        # A query of common words only still finds them.
        assert len(await store.keyword("widgets", Selection(T1), limit=5)) == 5


async def test_the_change_feed_has_one_row_per_id_in_its_current_state(
    store: PostgresItemStore,
) -> None:
    await store.put([_item("a"), _item("b"), _item("c")], [_vec(1), _vec(2), None])
    mark, changes = await store.changes(0, 100)
    assert [(c.id, c.tenant) for c in changes] == [("a", "t1"), ("b", "t1")]
    assert changes[0].vector == _vec(1).astype("<f4").tobytes()
    # Same text, no vector: the stored one is kept, and nothing changed.
    await store.put([_item("a", metadata={"x": 1})], [None])
    assert await store.changes(mark, 100) == (mark, [])
    assert [i.indexed for i in await store.get(["a"], tenant="t1")] == [True]
    # A new text without a vector clears it: one row for "a", at the end, without a vector.
    await store.put([_item("a", "new text")], [None])
    mark2, changes = await store.changes(mark, 100)
    assert [(c.id, c.vector) for c in changes] == [("a", None)] and mark2 > mark
    # The embedder's write lands only where the text is still the one it embedded.
    assert await store.set_vectors([("a", "a fact", _vec(5)), ("c", "a fact", _vec(6))]) == ["c"]
    assert [i.id for i in await store.unembedded(10)] == ["a"]
    assert await store.delete(["b", "nope"], tenant="t1") == 1
    mark3, changes = await store.changes(mark2, 100)
    assert [(c.id, c.vector is None) for c in changes] == [("c", False), ("b", True)]
    _, everything = await store.changes(0, 100)
    assert sorted(c.id for c in everything) == ["a", "b", "c"]  # compacted: one row per id
    assert await store.changes(mark3, 100) == (mark3, [])


async def test_same_matches_the_scope_exactly_and_live_items_only(
    store: PostgresItemStore,
) -> None:
    await store.put(
        [
            _item("k1", "Lives in Paris.", key="user.city"),
            _item("k2", "lives in   PARIS", scope=Scope("t1", "alice")),
            _item("k3", "Lives in Paris", key="user.city", superseded_by="k1"),
        ],
        [None] * 3,
    )
    digest = text_digest("lives in paris")
    assert [i.id for i in await store.same(T1, key="user.city")] == ["k1"]
    assert [i.id for i in await store.same(T1, digest=digest)] == ["k1"]
    assert [i.id for i in await store.same(Scope("t1", "alice"), digest=digest)] == ["k2"]
    assert await store.same(T1, key="user.city", digest=text_digest("other")) == []
    await store.touch(["k1", "k2"], tenant="t1", at=42.0)
    assert {i.id: i.accessed_at for i in await store.get(["k1", "k2", "k3"], tenant="t1")} == {
        "k1": 42.0,
        "k2": 42.0,
        "k3": None,
    }


async def test_valid_at_keeps_what_was_true_then(store: PostgresItemStore) -> None:
    await store.put(
        [
            _item("old", valid_from=10.0, valid_to=20.0, superseded_by="new"),
            _item("new", valid_from=20.0),
            _item("undated"),  # recorded_at 1.0
        ],
        [None] * 3,
    )

    async def at(t: float, live_only: bool = False) -> builtins.list[str]:
        return [i.id for i in await store.list(Selection(T1, live_only=live_only, valid_at=t))]

    assert await at(15.0) == ["old", "undated"]
    assert await at(20.0) == ["new", "undated"]
    assert await at(0.5) == []
    # Live at 15: "old" is superseded, but its successor starts only at 20 (a future-dated
    # fact does not hide the current one before it starts).
    assert await at(15.0, live_only=True) == ["old", "undated"]
    assert await at(25.0, live_only=True) == ["new", "undated"]


async def test_the_model_is_bound_once(url: str, store: PostgresItemStore) -> None:
    await store.bind_model("minilm", 384)
    await store.bind_model("minilm", 384)
    async with await PostgresItemStore.open(url) as other:
        with pytest.raises(StoreError, match="minilm:384"):
            await other.bind_model("other", 768)
    async with await PostgresItemStore.open(url, table_prefix="notes_") as notes:
        await notes.bind_model("other", 768)


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
        assert [c.id for c in changes] == ["x"]
        assert [i.id for i in await two.get(["x"], tenant="t1")] == ["x"]
        assert [h[0] for h in await two.keyword("fact", Selection(T1), limit=5)] == ["x"]
        assert not await two.wait_for_changes(0.05)  # nothing new since


async def test_two_semantic_memories_on_one_schema_see_each_others_writes(url: str) -> None:
    """Two workers (two pools, two vector indexes) on one database: each sees the
    other's writes, duplicates, superseded facts and deletions on a fresh search."""
    model = LocalEmbeddings()
    async with (
        SemanticMemory(await PostgresItemStore.open(url), embeddings=model) as one,
        SemanticMemory(await PostgresItemStore.open(url), embeddings=model) as two,
    ):
        first = await one.add("The user lives in Lisbon", key="user.city")
        await one.settle(first.id)
        hits = await two.search("Where does the user live?", mode="vector", limit=3)
        assert [h.item.id for h in hits] == [first.id]  # in two's own index, from the feed
        again = await two.add("the user lives in Lisbon.")
        assert again.duplicate_of == first.id
        moved = await two.add("The user lives in Porto now", key="user.city")
        assert moved.supersedes == (first.id,)
        await two.settle(moved.id)
        hits = await one.search("Where does the user live?", limit=3)
        assert [h.item.text for h in hits] == ["The user lives in Porto now"]
        assert await two.forget(moved.id) == 1
        assert await one.search("Porto", mode="vector", limit=3) == []


async def test_a_lost_listening_connection_wakes_the_reader(store: PostgresItemStore) -> None:
    await store.changes(0, 10)
    assert not await store.wait_for_changes(0.05)
    pid = store._signal._listener.server_pid  # the store's LISTEN connection
    assert pid is not None
    admin = await asyncpg.connect(PG_URL)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    with anyio.fail_after(10):
        assert await store.wait_for_changes(10)  # a notification may be lost: read the feed


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
                seen.update((c.id, c.vector is not None) for c in changes)
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
            seen.update((c.id, c.vector is not None) for c in changes)
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
        assert [i.id for i in await stores[-1].list(Selection(T1))] == ["a"]
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
        assert await b.list(Selection(T1)) == [] and await c.list(Selection(T1)) == []
        assert await b.changes(0, 10) == (0, []) and await c.changes(0, 10) == (0, [])
        assert not await c.wait_for_changes(0.2)  # a's notification names a's tables


async def test_ids_are_per_tenant(store: PostgresItemStore) -> None:
    await store.put([_item("x", "mine")], [_vec(1)])
    await store.put([_item("x", "theirs", scope=Scope("t2"))], [_vec(2)])
    assert [i.text for i in await store.get(["x"], tenant="t1")] == ["mine"]
    assert [i.text for i in await store.get(["x"], tenant="t2")] == ["theirs"]
    assert await store.delete(["x"], tenant="t2") == 1
    _, changes = await store.changes(0, 10)
    assert [(c.tenant, c.id, c.vector is None) for c in changes] == [
        ("t1", "x", False),
        ("t2", "x", True),
    ]


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
    with pytest.raises(ValueError, match="limit"):
        await store.list(Selection(T1), limit=0)
    with pytest.raises(ValueError, match="key or a digest"):
        await store.same(T1)
    with pytest.raises(TypeError, match="sequence of ids"):
        await store.get("abc", tenant="t1")
    for bad in (_item("n", "a\x00b"), _item("n", metadata={"k": "\x00"})):
        with pytest.raises(ValueError, match="NUL character"):
            await store.put([_item("fine"), bad], [None, None])
    assert await store.get(["fine"], tenant="t1") == []  # nothing of the batch was written


# -- filters: SQL means what the Python reference means --------------------------------

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, -2.5]),
    st.sampled_from(["", "a", "b", "B", "é", "10", "9"]),
)
_FIELDS = ["n", "s", "x"]


def _dataset() -> builtins.list[dict[str, Any]]:
    rng = random.Random(14)
    pool: builtins.list[Any] = [None, True, False, 0, 1, 2, -3, 0.5, 1.0, "", "a", "b", "B"]
    pool += ["é", "10", "9", [0], [1, 2], {"k": 1}]
    return [{f: rng.choice(pool) for f in _FIELDS if rng.random() < 0.7} for _ in range(80)]


_OPERATOR = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"])


@st.composite
def _filters(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=2, unique=True)):
        op = draw(_OPERATOR)
        if op == "$in":
            out[field] = {op: draw(st.lists(_SCALARS, max_size=3))}
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            bound = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, "a", "B", "10"]))
            out[field] = {op: draw(bound)}
        elif op == "$eq" and draw(st.booleans()):
            out[field] = draw(_SCALARS)  # the bare form
        else:
            out[field] = {op: draw(_SCALARS)}
    return out


@pytest.fixture
async def filtered(store: PostgresItemStore) -> PostgresItemStore:
    items = [_item(f"m{n:03}", metadata=m) for n, m in enumerate(_dataset())]
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
    expected = [f"m{n:03}" for n, m in enumerate(_dataset()) if all_hold(conditions, m)]
    selection = Selection(T1, filters=conditions)
    assert [i.id for i in await filtered.list(selection, limit=1000)] == expected, spec
