"""Semantic memory: one conformance suite, run against every item store.

``items`` is parametrised over ``sqlite`` (a file in tmp_path) and ``postgres``
(``mainspring.memory.semantic.postgres``; skipped while that module does not exist,
or when PostgreSQL is unreachable, unless MAINSPRING_REQUIRE_SERVICES=1). Embeddings
are the real local model, loaded once per module; a gate around it holds embedding
back where a test needs to see a write before its embedding.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.errors import NotAStoreError
from mainspring.memory.scope import Scope
from mainspring.memory.semantic import (
    DEFAULT_DEDUPE,
    DEFAULT_SUPERSEDE,
    AutoIndex,
    ExactIndex,
    ItemStore,
    NewItem,
    SemanticMemory,
    SimilarityResolver,
    Source,
    SQLiteItemStore,
)
from mainspring.memory.semantic.filters import parse_filters
from mainspring.memory.semantic.items import MemoryItem
from mainspring.memory.semantic.postgres import PostgresItemStore
from mainspring.memory.semantic.protocols import Selection
from mainspring.memory.semantic.ranking import fuse
from mainspring.memory.semantic.resolver_model import ModelResolver
from mainspring.models import Gateway, ScriptedModel
from mainspring.models.embeddings_local import LocalEmbeddings
from mainspring.models.errors import OverloadedError

from .conftest import postgres_schema_url, require_postgres

pytestmark = pytest.mark.anyio

StoreFactory = Callable[[], Any]


@pytest.fixture(scope="module")
def embeddings() -> LocalEmbeddings:
    model = LocalEmbeddings()
    model.load()
    return model


class Gate:
    """The real embeddings, held back until ``open()``: a write seen before its vector."""

    def __init__(self, model: LocalEmbeddings) -> None:
        self.model = model
        self.name, self.dimensions = model.name, model.dimensions
        self.opened = anyio.Event()

    def open(self) -> None:
        self.opened.set()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        await self.opened.wait()
        return await self.model.embed(texts)


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    """Opens the item store of this backend (again: the same data, for reopen tests)."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path / "semantic.db"

            async def sqlite_store() -> ItemStore:
                return await SQLiteItemStore.open(path)

            yield sqlite_store
        else:
            require_postgres()
            url = await stack.enter_async_context(postgres_schema_url())

            async def postgres_store() -> ItemStore:
                store: ItemStore = await PostgresItemStore.open(url)
                return store

            yield postgres_store


@pytest.fixture
def memory_of(
    open_store: Callable[[], Any], embeddings: LocalEmbeddings
) -> Callable[..., contextlib.AbstractAsyncContextManager[SemanticMemory]]:
    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[SemanticMemory]:
        options.setdefault("embeddings", embeddings)
        async with SemanticMemory(await open_store(), **options) as memory:
            yield memory

    return make


@pytest.fixture
async def memory(memory_of: Callable[..., Any]) -> AsyncIterator[SemanticMemory]:
    async with memory_of() as opened:
        yield opened


def texts(hits: Sequence[Any]) -> list[str]:
    return [h.item.text for h in hits]


# -- add, get, search -------------------------------------------------------------------


async def test_add_then_get_and_search(memory: SemanticMemory) -> None:
    written = await memory.add("The user lives in Paris.", metadata={"kind": "fact"})
    assert written.status == "pending"
    item = await memory.get(written.id)
    assert item is not None and item.text == "The user lives in Paris."
    assert item.metadata == {"kind": "fact"} and item.recorded_at > 0
    final = await memory.settle(written.id)
    assert final is not None and final.status == "added"
    await memory.add("The quarterly report is due on Friday.")
    hits = await memory.search("Which city is the user's home?")
    assert texts(hits)[0] == "The user lives in Paris."
    assert hits[0].vector is not None and hits[0].score > 0
    indexed = await memory.get(written.id)
    assert indexed is not None and indexed.indexed


async def test_keyword_hit_before_the_embedding(
    memory_of: Callable[..., Any], embeddings: LocalEmbeddings
) -> None:
    gate = Gate(embeddings)
    async with memory_of(embeddings=gate) as memory:
        written = await memory.add("Invoice 4711 was paid by bank transfer.")
        hits = await memory.search("invoice 4711", fresh=False)
        assert texts(hits) == ["Invoice 4711 was paid by bank transfer."]
        assert hits[0].keyword is not None and hits[0].vector is None
        assert not hits[0].item.indexed
        assert await memory.search("money sent for a bill", mode="vector", fresh=False) == []
        gate.open()
        hits = await memory.search("money sent for a bill", mode="vector")  # fresh: waits
        assert texts(hits) == ["Invoice 4711 was paid by bank transfer."]
        assert (await memory.settle(written.id)).status == "added"


async def test_fresh_search_sees_every_write_that_returned(memory: SemanticMemory) -> None:
    facts = [
        f"Project {name} ships in {month}."
        for name, month in [("Apollo", "May"), ("Borealis", "June"), ("Cygnus", "July")]
    ]
    for fact in facts:
        await memory.add(fact)
    hits = await memory.search("When does Cygnus ship?", mode="vector", limit=3)
    assert sorted(texts(hits)) == sorted(facts)


async def test_modes_keyword_and_vector(memory: SemanticMemory) -> None:
    await memory.add("The staging database password rotates every 30 days.")
    await memory.add("Our cat enjoys sleeping in the sun.")
    keyword = await memory.search("password rotates", mode="keyword")
    assert texts(keyword) == ["The staging database password rotates every 30 days."]
    assert keyword[0].vector is None and keyword[0].keyword is not None
    vector = await memory.search("how often do credentials change", mode="vector", limit=1)
    assert texts(vector) == ["The staging database password rotates every 30 days."]
    hybrid = await memory.search("password", limit=5)
    assert texts(hybrid)[0] == "The staging database password rotates every 30 days."


async def test_add_many_with_sources(memory: SemanticMemory) -> None:
    source = Source("handbook.md", title="Handbook", chunk=3, heading="Leave > Parental")
    results = await memory.add_many(
        ["Parental leave is 16 weeks.", NewItem("Leave requests go to HR.", source=source)],
        scope=Scope("acme"),
    )
    assert [r.status for r in results] == ["pending", "pending"]
    item = await memory.get(results[1].id, tenant="acme")
    assert item is not None and item.source == source


# -- de-duplication and contradictions ---------------------------------------------------


async def test_exact_duplicate_is_answered_at_once(memory: SemanticMemory) -> None:
    first = await memory.add("The user lives in Paris.", metadata={"a": 1})
    again = await memory.add("  the USER lives in paris ", metadata={"b": 2})
    assert again.status == "duplicate" and again.duplicate_of == first.id
    assert await memory.get(again.id) is None
    kept = await memory.get(first.id)
    assert kept is not None and kept.metadata == {"a": 1, "b": 2}
    assert len(await memory.list()) == 1


async def test_semantic_duplicate_merges_into_the_older_item(memory: SemanticMemory) -> None:
    first = await memory.add("The project deadline is Friday.", metadata={"from": "chat"})
    second = await memory.add(
        "The deadline for the project is on Friday.", metadata={"confidence": 0.9}
    )
    final = await memory.settle(second.id)
    assert final is not None and final.status == "duplicate" and final.duplicate_of == first.id
    assert await memory.get(second.id) is None
    kept = await memory.get(first.id)
    assert kept is not None and kept.metadata == {"from": "chat", "confidence": 0.9}
    assert kept.updated_at >= kept.recorded_at
    assert texts(await memory.search("when is the project due")) == [
        "The project deadline is Friday."
    ]


@pytest.mark.parametrize(
    ("old_text", "new_text"),
    [
        ("Deploys to staging need approval.", "Deploys to production need approval."),
        ("Order 1234 shipped on Monday.", "Order 5678 shipped on Tuesday."),
        (
            "The user's password must be rotated monthly.",
            "The user's API key must be rotated monthly.",
        ),
    ],
)
async def test_facts_about_other_entities_are_never_dropped_or_hidden(
    memory: SemanticMemory, old_text: str, new_text: str
) -> None:
    old = await memory.add(old_text)
    await memory.settle(old.id)
    new = await memory.add(new_text)
    final = await memory.settle(new.id)
    assert final is not None and final.status == "added"
    assert {i.text for i in await memory.list()} == {old_text, new_text}


async def test_same_key_supersedes_at_once(memory: SemanticMemory) -> None:
    old = await memory.add("The user's city is Paris.", key="user.city", valid_from=1000.0)
    new = await memory.add("The user moved to Berlin.", key="user.city", valid_from=2000.0)
    assert new.status == "superseded" and new.supersedes == (old.id,)
    marked = await memory.get(old.id)
    assert marked is not None and marked.superseded_by == new.id and marked.valid_to == 2000.0
    assert texts(await memory.search("city", mode="keyword")) == []  # "city" only in the old
    everything = await memory.search("city", include_superseded=True, mode="keyword")
    assert texts(everything) == ["The user's city is Paris."]
    assert texts(await memory.search("user", as_of=1500.0, mode="keyword")) == [
        "The user's city is Paris."
    ]
    assert texts(await memory.search("user", as_of=2500.0, mode="keyword")) == [
        "The user moved to Berlin."
    ]
    final = await memory.settle(new.id)
    assert final is not None and final.supersedes[:1] == (old.id,)


async def test_contradiction_marks_the_old_fact_superseded(memory: SemanticMemory) -> None:
    old = await memory.add("The user lives in Paris.")
    await memory.settle(old.id)
    new = await memory.add("The user lives in Berlin.")
    final = await memory.settle(new.id)
    assert final is not None and final.status == "superseded" and final.supersedes == (old.id,)
    marked = await memory.get(old.id)
    assert marked is not None and marked.superseded_by == new.id
    assert marked.valid_to is not None
    hits = await memory.search("Where does the user live?")
    assert texts(hits) == ["The user lives in Berlin."]
    history = await memory.search("Where does the user live?", include_superseded=True)
    assert set(texts(history)) == {"The user lives in Paris.", "The user lives in Berlin."}
    then = await memory.search("Where does the user live?", as_of=marked.recorded_at + 1e-3)
    assert texts(then) == ["The user lives in Paris."]


async def test_similar_but_distinct_facts_are_both_kept(memory: SemanticMemory) -> None:
    first = await memory.add("The user lives in Paris.")
    second = await memory.add("The user's sister lives in Paris.")
    assert (await memory.settle(second.id)).status == "added"
    assert {i.id for i in await memory.list()} == {first.id, second.id}


async def test_contradiction_handling_can_be_turned_off(memory_of: Callable[..., Any]) -> None:
    async with memory_of(supersede=None) as memory:
        await memory.add("The user lives in Paris.")
        new = await memory.add("The user lives in Berlin.")
        assert (await memory.settle(new.id)).status == "added"
        assert len(await memory.list()) == 2


# -- update, forget, list -----------------------------------------------------------------


async def test_update_text_is_embedded_again(memory: SemanticMemory) -> None:
    written = await memory.add("The office wifi password is hunter2.")
    await memory.add("Lunch is served at noon.")
    updated = await memory.update(written.id, text="Visitors park in the north garage.")
    assert updated.text == "Visitors park in the north garage."
    hits = await memory.search("where do guests leave their cars", mode="vector", limit=1)
    assert texts(hits) == ["Visitors park in the north garage."]
    assert await memory.search("wifi password", mode="keyword") == []


async def test_update_metadata_and_validity(memory: SemanticMemory) -> None:
    written = await memory.add("The promo code SPRING works.", metadata={"kind": "promo"})
    changed = await memory.update(written.id, metadata={"kind": "expired"}, valid_to=time.time())
    assert changed.metadata == {"kind": "expired"} and changed.valid_to is not None
    assert await memory.search("promo code", mode="keyword") == []  # no longer valid now
    with pytest.raises(KeyError):
        await memory.update("no-such-id", text="x")


async def test_forget(memory: SemanticMemory) -> None:
    a = await memory.add("Alpha fact about rockets.")
    b = await memory.add("Beta fact about boats.")
    assert await memory.forget([a.id, "missing"]) == 1
    assert await memory.get(a.id) is None
    assert texts(await memory.search("fact about rockets", mode="vector")) == [
        "Beta fact about boats."
    ]
    assert await memory.forget(b.id, tenant="other") == 0


async def test_list_pages_in_id_order(memory: SemanticMemory) -> None:
    notes = [
        "Tea is in the left cupboard.",
        "The printer jams on A3.",
        "Fridays end at 4.",
        "Parking permits renew in May.",
        "The wiki moved to Notion.",
    ]
    ids = [(await memory.add(note)).id for note in notes]
    first = await memory.list(limit=2)
    second = await memory.list(limit=2, after=first[-1].id)
    rest = await memory.list(limit=10, after=second[-1].id)
    assert [i.id for i in first + second + rest] == sorted(ids)


# -- filters, tenancy, scope ----------------------------------------------------------


async def test_metadata_filters(memory: SemanticMemory) -> None:
    entries = [
        (
            "Users cannot log in after a password reset.",
            {"kind": "bug", "priority": 1, "team": "auth"},
        ),
        (
            "The login page colours clash with the logo.",
            {"kind": "ui", "priority": 3, "team": "web"},
        ),
        (
            "Login attempts are not rate limited per IP.",
            {"kind": "bug", "priority": 2, "draft": True},
        ),
    ]
    for text, metadata in entries:
        await memory.add(text, metadata=metadata)

    async def found(**filters: Any) -> set[int]:
        hits = await memory.search("login problems", filters=filters)
        return {[e[0] for e in entries].index(h.item.text) for h in hits}

    assert await found(kind="bug") == {0, 2}
    assert await found(priority={"$gte": 2}) == {1, 2}
    assert await found(team={"$in": ["auth", "web"]}, priority={"$lt": 3}) == {0}
    assert await found(draft={"$ne": True}) == {0, 1}
    listed = await memory.list(filters={"kind": {"$ne": "bug"}})
    assert [i.metadata["kind"] for i in listed] == ["ui"]


async def test_tenants_are_isolated(memory: SemanticMemory) -> None:
    a = await memory.add("The launch code is 1234.", scope=Scope("a"))
    b = await memory.add("The launch code is 1234.", scope=Scope("b"))
    assert a.status == b.status == "pending"  # the same text in another tenant is not a duplicate
    assert texts(await memory.search("launch code", scope=Scope("a"))) == [
        "The launch code is 1234."
    ]
    assert await memory.search("launch code", scope=Scope("c")) == []
    assert await memory.get(a.id, tenant="b") is None
    assert await memory.forget(a.id, tenant="b") == 0
    assert [i.id for i in await memory.list(Scope("b"))] == [b.id]


async def test_user_and_agent_scopes(memory: SemanticMemory) -> None:
    t = "acme"
    u1 = await memory.add("Prefers tea over coffee.", scope=Scope(t, user="u1"))
    u2 = await memory.add("Prefers tea over coffee.", scope=Scope(t, user="u2"))
    bot = await memory.add("Answers in French.", scope=Scope(t, user="u1", agent="bot"))
    assert u2.status == "pending"  # another user's identical fact is that user's own
    mine = await memory.search("drinks", scope=Scope(t, user="u1"), mode="vector")
    assert {h.item.id for h in mine} == {u1.id, bot.id}
    agent = await memory.search("language", scope=Scope(t, agent="bot"))
    assert [h.item.id for h in agent] == [bot.id]
    assert len(await memory.list(Scope(t))) == 3


async def test_bad_input_says_what_to_fix(memory: SemanticMemory) -> None:
    with pytest.raises(ValueError, match="empty"):
        await memory.add("   ")
    with pytest.raises(TypeError, match="Scope"):
        await memory.add("x", scope="acme")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        await memory.add("x", metadata={"when": object()})
    with pytest.raises(ValueError, match="unknown operator"):
        await memory.search("x", filters={"a": {"$regex": "."}})
    with pytest.raises(ValueError, match="limit"):
        await memory.search("x", limit=0)
    with pytest.raises(ValueError, match="mode"):
        await memory.search("x", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="epoch seconds"):
        await memory.search("x", as_of="yesterday")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or NewItem"):
        await memory.add_many([42])  # type: ignore[list-item]


# -- persistence ------------------------------------------------------------------------


async def test_reopen_keeps_items_and_rebuilds_the_index(memory_of: Callable[..., Any]) -> None:
    async with memory_of() as memory:
        written = await memory.add("The backup runs nightly at 2 am.")
        await memory.add("The user lives in Paris.", key="user.city")
    async with memory_of() as memory:
        hits = await memory.search("when are backups made", mode="vector", limit=1)
        assert [h.item.id for h in hits] == [written.id]
        moved = await memory.add("The user lives in Rome.", key="user.city")
        assert moved.status == "superseded"


async def test_writes_left_unembedded_are_embedded_on_reopen(
    memory_of: Callable[..., Any], embeddings: LocalEmbeddings
) -> None:
    gate = Gate(embeddings)
    with pytest.raises(RuntimeError):
        async with memory_of(embeddings=gate) as memory:
            written = await memory.add("The fire drill is on Thursday.")
            raise RuntimeError("the process stops before embedding")  # exit without settling
    async with memory_of() as memory:
        hits = await memory.search("emergency practice day", mode="vector", limit=1)
        assert [h.item.id for h in hits] == [written.id]


async def test_search_records_access_times(memory_of: Callable[..., Any]) -> None:
    async with memory_of() as memory:
        written = await memory.add("Kettle descaling is monthly.")
        await memory.search("kettle")
    async with memory_of() as memory:
        item = await memory.get(written.id)
        assert item is not None and item.accessed_at is not None


# -- the store against the Python reference of filters -----------------------------

_values = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["a", "b", "B", "é"]),
    st.booleans(),
)
_metadata = st.dictionaries(st.sampled_from(["k", "n", "s"]), _values, max_size=3)
_operand = st.one_of(_values, st.lists(_values, max_size=3).map(lambda v: {"$in": v}))
_filters = st.dictionaries(
    st.sampled_from(["k", "n", "s"]),
    st.one_of(
        _operand,
        st.tuples(st.sampled_from(["$eq", "$ne"]), _values).map(lambda p: {p[0]: p[1]}),
        st.tuples(
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
            st.one_of(
                st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), st.sampled_from(["a", "b"])
            ),
        ).map(lambda p: {p[0]: p[1]}),
    ),
    max_size=2,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(_metadata, min_size=1, max_size=8), filters=_filters)
async def test_store_filters_agree_with_the_python_reference(
    open_store: Callable[[], Any], rows: list[dict[str, Any]], filters: dict[str, Any]
) -> None:
    store: ItemStore = await open_store()
    try:
        tenant = uuid.uuid4().hex
        items = [
            MemoryItem(f"{n:04d}", f"row {n}", Scope(tenant), m, recorded_at=1.0, updated_at=1.0)
            for n, m in enumerate(rows)
        ]
        await store.put(items, [None] * len(items))
        selection = Selection(Scope(tenant), parse_filters(filters), live_only=False)
        listed = await store.list(selection, limit=100)
        assert [i.id for i in listed] == [i.id for i in items if selection.admits(i)]
    finally:
        await store.aclose()


_times = st.sampled_from([None, 10.0, 20.0, 30.0])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_times, _times, st.booleans()), min_size=1, max_size=8),
    at=st.sampled_from([5.0, 10.0, 15.0, 20.0, 25.0, 35.0]),
    live_only=st.booleans(),
)
async def test_store_validity_agrees_with_the_python_reference(
    open_store: Callable[[], Any],
    rows: list[tuple[float | None, float | None, bool]],
    at: float,
    live_only: bool,
) -> None:
    """live_only with valid_at: a superseded item stays while its successor has not
    started (valid_to > valid_at); what a PostgreSQL store must match too."""
    store: ItemStore = await open_store()
    try:
        tenant = uuid.uuid4().hex
        items = [
            MemoryItem(
                f"{n:04d}", f"row {n}", Scope(tenant), recorded_at=1.0, updated_at=1.0,
                valid_from=start, valid_to=end, superseded_by="x" if replaced else None,
            )
            for n, (start, end, replaced) in enumerate(rows)
        ]  # fmt: skip
        await store.put(items, [None] * len(items))
        selection = Selection(Scope(tenant), live_only=live_only, valid_at=at)
        listed = await store.list(selection, limit=100)
        assert [i.id for i in listed] == [i.id for i in items if selection.admits(i)]
    finally:
        await store.aclose()


# -- SQLite only: the file -------------------------------------------------------------


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 10)
    with pytest.raises(NotAStoreError, match="not a SQLite file"):
        await SQLiteItemStore.open(path)
    assert path.read_bytes().startswith(b"these are my notes")


async def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
        db.commit()
    with pytest.raises(NotAStoreError, match="something else"):
        await SQLiteItemStore.open(path)


async def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "semantic.db"
    store = await SQLiteItemStore.open(path)
    await store.aclose()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(NotAStoreError, match="corrupt"):
        await SQLiteItemStore.open(path)


async def test_open_urls(tmp_path: Path, embeddings: LocalEmbeddings) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    async with SemanticMemory.open(url, embeddings=embeddings) as memory:
        await memory.add("Stored through a URL.")
    assert (tmp_path / "m.db").exists()
    async with SemanticMemory.open(":memory:", embeddings=embeddings) as memory:
        assert await memory.list() == []
    with pytest.raises(ValueError, match="unknown semantic memory URL"):
        async with SemanticMemory.open("redis://localhost"):
            pass


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (Path(__file__).parent.parent / "docs" / "memory-semantic.md").read_text()
    block = re.search(r"## Example\n\n```python\n(.*?)```", page, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "docs/memory-semantic.md", "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("exact_up_to", [20_000, 2], ids=["exact", "hnsw"])
async def test_the_index_is_saved_on_close_and_loaded_on_open(
    tmp_path: Path, embeddings: LocalEmbeddings, exact_up_to: int
) -> None:
    path, snapshot = tmp_path / "m.db", tmp_path / "m.db.index"

    def index(dimensions: int) -> AutoIndex:
        return AutoIndex(dimensions, exact_up_to=exact_up_to)

    facts = ["The backup runs nightly.", "Lunch is at noon.", "The VPN needs a token."]
    async with SemanticMemory(
        SQLiteItemStore(path), embeddings=embeddings, index=index, index_dir=snapshot
    ) as memory:
        ids = [(await memory.add(f)).id for f in facts]
    assert (snapshot / "manifest.json").exists()
    # Changed behind the snapshot's back: the feed after its change number has it.
    store = SQLiteItemStore(path)
    assert await store.delete([ids[0]], tenant="") == 1
    await store.aclose()
    async with SemanticMemory(
        SQLiteItemStore(path), embeddings=embeddings, index_dir=snapshot
    ) as memory:
        loaded = memory.indexes.snapshot()[1][""]
        assert len(loaded) == 2 and isinstance(loaded, AutoIndex)
        hits = await memory.search("remote network access", mode="vector", limit=3)
        assert hits[0].item.id == ids[2]
        assert ids[0] not in {h.item.id for h in hits}


async def test_a_snapshot_of_another_store_is_ignored(
    tmp_path: Path, embeddings: LocalEmbeddings
) -> None:
    snapshot = tmp_path / "shared.index"
    async with SemanticMemory(
        SQLiteItemStore(tmp_path / "a.db"), embeddings=embeddings, index_dir=snapshot
    ) as memory:
        await memory.add("Only in store a.")
    async with SemanticMemory(
        SQLiteItemStore(tmp_path / "b.db"), embeddings=embeddings, index_dir=snapshot
    ) as memory:
        assert memory.indexes.snapshot()[1] == {}
        assert await memory.search("store a", mode="vector") == []


# -- the parts, without a store ------------------------------------------------------


def test_the_default_rule_holds_its_measured_precision(embeddings: LocalEmbeddings) -> None:
    pairs = json.loads((Path(__file__).parent / "data" / "fact_pairs.json").read_text())["pairs"]
    old = embeddings.embed_array([p["old"] for p in pairs])
    new = embeddings.embed_array([p["new"] for p in pairs])
    rule = SimilarityResolver(DEFAULT_DEDUPE, DEFAULT_SUPERSEDE)
    judged = [
        rule.decide(p["old"], p["new"], float(s))
        for p, s in zip(pairs, (old * new).sum(axis=1), strict=True)
    ]
    # Precision first: a wrong "duplicate" drops a fact, a wrong "supersedes" hides one;
    # duplicate recall is low by design (only true paraphrases merge).
    for label, least_recall in (("duplicate", 0.2), ("supersedes", 0.85)):
        hits = [j == label for j in judged]
        right = sum(h and p["label"] == label for h, p in zip(hits, pairs, strict=True))
        assert right / sum(hits) >= 0.97, label
        assert right / sum(p["label"] == label for p in pairs) >= least_recall, label


def test_filter_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="top-level metadata key"):
        parse_filters({"a.b": 1})
    with pytest.raises(TypeError, match=r"\$in takes a list"):
        parse_filters({"a": {"$in": "abc"}})
    with pytest.raises(TypeError, match="not a bool"):
        parse_filters({"a": {"$gt": True}})
    with pytest.raises(TypeError, match="str, int, float or bool"):
        parse_filters({"a": None})
    with pytest.raises(ValueError, match="empty mapping"):
        parse_filters({"a": {}})


def test_rank_fusion_prefers_what_both_lists_agree_on() -> None:
    fused = fuse([("a", 0.9), ("b", 0.8), ("c", 0.7)], [("c", 5.0), ("d", 4.0)])
    assert [f.id for f in fused] == ["c", "a", "b", "d"]
    assert (fused[0].vector, fused[0].keyword) == (0.7, 5.0)
    assert fused[3].vector is None


def test_auto_index_builds_its_graph_aside_and_replays_what_changed() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((90, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"i{n}" for n in range(90)]
    auto, exact = AutoIndex(16, exact_up_to=50), ExactIndex(16)
    for index in (auto, exact):
        index.add(ids[:60], vectors[:60])  # past 50: the graph starts building
    assert not auto.graph or len(auto) == 60
    for index in (auto, exact):  # changes while it builds
        index.add(ids[60:], vectors[60:])
        index.remove(ids[:5])
    auto.settle()
    assert auto.graph and len(auto) == 85
    for q in vectors[::7]:
        assert [i for i, _ in auto.search(q, 5)] == [i for i, _ in exact.search(q, 5)]
    assert [i for i, _ in auto.search(vectors[3], 3, among=["i3", "i7"])] == ["i7"]  # i3: removed


async def test_a_model_judge_replaces_the_rule(
    memory_of: Callable[..., Any], tmp_path: Path
) -> None:
    judge = ScriptedModel([{"verdict": "supersedes"}])
    resolver = ModelResolver(Gateway({"judge": judge}), "judge")
    async with memory_of(resolver=resolver) as memory:
        old = await memory.add("The user is single.")
        await memory.settle(old.id)
        new = await memory.add("The user is married.")  # the judge's verdict, not the rule's
        final = await memory.settle(new.id)
        assert final.status == "superseded" and final.supersedes == (old.id,)
        assert "OLD: The user is single." in judge.calls[0].messages[-1].text


async def test_a_failing_model_judge_falls_back_to_the_rule(
    memory_of: Callable[..., Any],
) -> None:
    judge = ScriptedModel([OverloadedError("busy")])
    async with memory_of(resolver=ModelResolver(Gateway({"judge": judge}), "judge")) as memory:
        old = await memory.add("The project deadline is Friday.")
        await memory.settle(old.id)
        new = await memory.add("The deadline for the project is on Friday.")
        final = await memory.settle(new.id)
        assert final.status == "duplicate" and final.duplicate_of == old.id


# -- regressions: ids across scopes, validity of keyed versions, snapshots, restore ------


async def test_an_explicit_id_of_another_scope_is_refused(memory: SemanticMemory) -> None:
    alice, bob = Scope("t", user="alice"), Scope("t", user="bob")
    await memory.add("Alice's locker code is 1234.", scope=alice, id="fact-1")
    with pytest.raises(ValueError, match=r"'fact-1'.*another scope"):
        await memory.add("Bob's locker code is 9999.", scope=bob, id="fact-1")
    with pytest.raises(ValueError, match="another scope"):
        await memory.add_many([NewItem("Bob's note.", id="fact-1")], scope=bob)
    kept = await memory.get("fact-1", tenant="t")
    assert kept is not None and kept.scope == alice and kept.text == "Alice's locker code is 1234."
    assert await memory.list(bob) == []


async def test_an_explicit_id_of_the_same_scope_is_replaced(memory: SemanticMemory) -> None:
    alice = Scope("t", user="alice")
    await memory.add("Alice's locker code is 1234.", scope=alice, id="fact-1")
    first = await memory.get("fact-1", tenant="t")
    again = await memory.add("Alice's locker is number 12.", scope=alice, id="fact-1")
    assert again.id == "fact-1" and again.status == "pending"
    await memory.settle("fact-1")
    changed = await memory.get("fact-1", tenant="t")
    assert first is not None and changed is not None
    assert changed.text == "Alice's locker is number 12." and changed.superseded_by is None
    assert changed.recorded_at == first.recorded_at and changed.updated_at >= first.updated_at
    assert [i.id for i in await memory.list(alice)] == ["fact-1"]


async def test_a_back_dated_keyed_fact_becomes_history(memory: SemanticMemory) -> None:
    current = await memory.add("The user's city is Berlin.", key="user.city", valid_from=2000.0)
    older = await memory.add("The user's city was Paris.", key="user.city", valid_from=1000.0)
    assert older.status == "pending" and older.supersedes == ()
    history = await memory.get(older.id)
    assert history is not None
    assert (history.superseded_by, history.valid_to) == (current.id, 2000.0)
    still = await memory.get(current.id)
    assert still is not None and still.superseded_by is None and still.valid_to is None
    assert [i.id for i in await memory.list()] == [current.id]
    assert texts(await memory.search("user city", mode="keyword")) == ["The user's city is Berlin."]
    assert texts(await memory.search("user city", as_of=1500.0, mode="keyword")) == [
        "The user's city was Paris."
    ]
    assert texts(await memory.search("user city", as_of=2500.0, mode="keyword")) == [
        "The user's city is Berlin."
    ]


async def test_a_back_dated_fact_lands_between_two_versions(memory: SemanticMemory) -> None:
    first = await memory.add("Plan: Basic.", key="plan", valid_from=1000.0)
    await memory.add("Plan: Premium.", key="plan", valid_from=3000.0)
    second = await memory.add("Plan: Standard.", key="plan", valid_from=2000.0)
    assert second.supersedes == (first.id,)
    at = {
        t: texts(await memory.search("plan", as_of=t, mode="keyword")) for t in (1500, 2500, 3500)
    }
    assert at == {1500: ["Plan: Basic."], 2500: ["Plan: Standard."], 3500: ["Plan: Premium."]}
    assert texts(await memory.search("plan", mode="keyword")) == ["Plan: Premium."]


async def test_a_future_dated_keyed_fact_waits_for_its_start(memory: SemanticMemory) -> None:
    old = await memory.add("The office is in building A.", key="office")
    starts_at = time.time() + 1.0
    new = await memory.add("The office is in building B.", key="office", valid_from=starts_at)
    assert new.supersedes == (old.id,)
    marked = await memory.get(old.id)
    assert marked is not None and marked.superseded_by == new.id and marked.valid_to == starts_at
    now = time.time()
    assert texts(await memory.search("office building", mode="keyword")) == [
        "The office is in building A."
    ]
    assert texts(await memory.search("office building", as_of=now, mode="keyword")) == [
        "The office is in building A."
    ]
    assert [i.text for i in await memory.list()] == ["The office is in building A."]
    assert texts(await memory.search("office building", as_of=starts_at, mode="keyword")) == [
        "The office is in building B."
    ]
    await anyio.sleep(max(0.0, starts_at - time.time()) + 0.05)
    assert texts(await memory.search("office building", mode="keyword")) == [
        "The office is in building B."
    ]
    assert texts(await memory.search("office building", as_of=time.time(), mode="keyword")) == [
        "The office is in building B."
    ]


async def test_a_fact_between_now_and_a_scheduled_one_takes_over(memory: SemanticMemory) -> None:
    old = await memory.add("The office is in building A.", key="office")
    later = time.time() + 10_000.0
    scheduled = await memory.add("The office is in building B.", key="office", valid_from=later)
    between = await memory.add("The office is in building C.", key="office")
    assert between.supersedes == (old.id,)
    placed = await memory.get(between.id)
    assert placed is not None and (placed.superseded_by, placed.valid_to) == (scheduled.id, later)
    closed = await memory.get(old.id)
    assert closed is not None and closed.superseded_by == between.id
    assert [i.text for i in await memory.list()] == ["The office is in building C."]
    assert texts(await memory.search("office building", as_of=later + 1, mode="keyword")) == [
        "The office is in building B."
    ]


async def test_the_same_key_twice_in_one_call_keeps_only_the_later(
    memory: SemanticMemory,
) -> None:
    results = await memory.add_many(
        [
            NewItem("The user's phone is 555-0100.", key="user.phone"),
            NewItem("The user's phone is 555-0199.", key="user.phone"),
        ]
    )
    assert results[1].status == "superseded" and results[1].supersedes == (results[0].id,)
    earlier = await memory.get(results[0].id)
    assert earlier is not None and earlier.superseded_by == results[1].id
    assert [i.text for i in await memory.list()] == ["The user's phone is 555-0199."]
    assert texts(await memory.search("phone", mode="keyword")) == ["The user's phone is 555-0199."]


async def test_restore_counts_as_a_write(memory: SemanticMemory) -> None:
    written = await memory.add("The archive keeps old sessions.", valid_from=500.0)
    await memory.settle(written.id)
    item = await memory.get(written.id)
    assert item is not None
    old = msgspec.structs.replace(item, recorded_at=1000.0, updated_at=1000.0, accessed_at=1000.0)
    await memory.forget(item.id)
    before = time.time()
    await memory.restore([old])
    back = await memory.get(item.id)
    assert back is not None
    assert (back.recorded_at, back.valid_from, back.valid_to) == (1000.0, 500.0, None)
    assert back.updated_at >= before and back.accessed_at is not None
    assert back.accessed_at >= before


async def test_a_snapshot_from_the_future_is_rebuilt(
    tmp_path: Path, embeddings: LocalEmbeddings
) -> None:
    path, snapshot = tmp_path / "m.db", tmp_path / "m.db.index"

    def opened() -> SemanticMemory:
        return SemanticMemory(SQLiteItemStore(path), embeddings=embeddings, index_dir=snapshot)

    async with opened() as memory:
        await memory.add("The backup runs nightly.")
    shutil.copy(path, tmp_path / "backup.db")
    async with opened() as memory:
        await memory.add_many([f"Filler note number {n} about the canteen." for n in range(20)])
    shutil.copy(tmp_path / "backup.db", path)  # an older copy of the store is restored
    async with opened() as memory:
        new = await memory.add("Visitors park in the north garage.")
        await memory.settle(new.id)
        hits = await memory.search("where do guests leave their cars", mode="vector", limit=1)
        assert texts(hits) == ["Visitors park in the north garage."]
        assert memory.indexes.size("") == 2
    async with opened() as memory:
        hits = await memory.search("where do guests leave their cars", mode="vector", limit=1)
        assert texts(hits) == ["Visitors park in the north garage."]
        assert memory.indexes.size("") == 2


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations([1000.0, 2000.0, 3000.0, 4000.0]))
async def test_keyed_versions_in_any_order_give_one_timeline(
    memory_of: Callable[..., Any], order: list[float]
) -> None:
    """Whatever order the versions of a keyed fact arrive in, each time sees the one
    that started last before it, and now sees the latest."""
    async with memory_of() as memory:
        key = uuid.uuid4().hex
        scope = Scope(key)
        for start in order:
            await memory.add(f"Version from {start:.0f}.", key=key, valid_from=start, scope=scope)
        for at in (1500.0, 2500.0, 3500.0, 4500.0):
            expected = f"Version from {int(at // 1000) * 1000}."
            assert [i.text for i in await memory.list(scope, as_of=at)] == [expected]
        assert [i.text for i in await memory.list(scope)] == ["Version from 4000."]
