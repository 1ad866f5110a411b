"""Large values stored once by content hash (store/_blobs.py), on SQLite and PostgreSQL.

An agent-like run (a step that returns a 100 KB document, then effects that carry it
in their arguments and results) must store about one copy of it, read back exactly
through every read path, resume, fork and replay; a changed or lost blob must be an
error on read and a finding of ``audit verify``; deleting runs deletes the blobs that
no run references any more.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import anyio
import anyio.to_thread
import asyncpg
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring import END, START, Context, EventKind, Graph, RunStatus, Runtime
from mainspring.errors import CorruptStoreError
from mainspring.events import RunStarted, encode
from mainspring.guard.audit import erase_user, export_lines, verify
from mainspring.store._blobs import (
    PREFIX,
    any_split,
    digest_of,
    is_split,
    join_large,
    refs,
    split_large,
)

from .conftest import postgres_schema_url

pytestmark = pytest.mark.anyio

DOC = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(1800))
N_CALLS = 8


class Doc(TypedDict, total=False):
    doc: str
    seen: list[int]
    approved: bool
    meta: dict[str, Any]


def _fetch() -> str:
    return DOC


def _use(doc: str, i: int) -> str:
    return doc  # a tool that echoes its input: the document in its result too


def reader() -> Any:
    """fetch: a 100 KB document; use: N effects carrying it in args and result; ask: park."""
    g = Graph(Doc, name="reader")

    @g.node
    async def fetch(s: Doc, ctx: Context) -> dict[str, Any]:
        return {"doc": await ctx.step("fetch", _fetch)}

    @g.node
    async def use(s: Doc, ctx: Context) -> dict[str, Any]:
        seen = [len(await ctx.step(f"call{i}", _use, s["doc"], i)) for i in range(N_CALLS)]
        return {"seen": seen}

    @g.node
    async def ask(s: Doc, ctx: Context) -> dict[str, Any]:
        return {"approved": bool(await ctx.interrupt({"approve": len(s["doc"])}))}

    g.edge(START, "fetch")
    g.edge("fetch", "use")
    g.edge("use", "ask")
    g.edge("ask", END)
    return g.compile()


# -- the two backends, with raw access to their tables ------------------------------------------


@dataclass
class Backend:
    name: str
    url: str
    path: Path | None = None  # SQLite's file
    schema: str = ""  # PostgreSQL's schema

    async def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the raw database (tables named bare)."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as db, db:
                return db.execute(statement, args).fetchall()
        conn = await asyncpg.connect(self.url.split("?")[0])
        try:
            await conn.execute(f'SET search_path TO "{self.schema}"')
            return [tuple(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    async def stored_bytes(self) -> tuple[int, int]:
        """Bytes of event data and of blobs, as stored."""
        if self.path is not None:
            events = "SELECT coalesce(sum(length(data)), 0) FROM events"
            blobs = "SELECT coalesce(sum(length(data)), 0) FROM blobs"
        else:
            events = "SELECT coalesce(sum(octet_length(data)), 0) FROM events"
            blobs = "SELECT coalesce(sum(octet_length(data)), 0) FROM blobs"
        return int((await self.sql(events))[0][0]), int((await self.sql(blobs))[0][0])

    def param(self, n: int) -> str:
        return "?" if self.path is not None else f"${n}"


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "blobs.db"
        yield Backend("sqlite", f"sqlite:///{path}", path=path)
        return
    async with postgres_schema_url() as url:
        yield Backend("postgres", url, schema=url.rsplit("schema=", 1)[1])


@contextlib.asynccontextmanager
async def runtime(backend: Backend, durability: str = "sync") -> AsyncIterator[Runtime]:
    async with Runtime.open(backend.url, graphs=[reader()], durability=durability) as rt:
        rt.gate.args_cap = 1 << 30  # record arguments whole: the document in each call
        yield rt


async def _parked(rt: Runtime, **metadata: Any) -> str:
    handle = await rt.start(reader(), {}, metadata=metadata or None)
    assert (await handle.wait()).status is RunStatus.INTERRUPTED
    return handle.run_id


# -- the journal grows by one copy, and reads back whole -----------------------------------------


async def test_a_repeated_document_is_stored_once(backend: Backend) -> None:
    async with runtime(backend) as rt:
        run_id = await _parked(rt)
        events_bytes, blob_bytes = await backend.stored_bytes()
        # fetch's result, the state update, N arguments and N results: 2N + 2 copies
        # without blobs; one blob (and a ~100-byte reference per copy) with them.
        assert blob_bytes == len(DOC.encode())
        assert events_bytes < 20_000, events_bytes
        assert (await backend.sql("SELECT count(*) FROM blobs"))[0][0] == 1

        events = await rt.events(run_id)
        starts = [e for e in events if e.kind is EventKind.EFFECT_STARTED]
        finishes = [e for e in events if e.kind is EventKind.EFFECT_FINISHED]
        assert len(starts) == N_CALLS + 1
        for e in starts[1:]:
            assert e.data["args"]["args"][0] == DOC
        assert all(e.data["result"] == DOC for e in finishes)
        update = next(e for e in events if e.kind is EventKind.STEP_FINISHED)
        assert update.data["update"] == {"doc": DOC}
        assert await rt.store.read(run_id) == events  # the store's own read path

        handle = await rt.resume(run_id, True)
        out = await handle.result()
        assert out["doc"] == DOC and out["seen"] == [len(DOC)] * N_CALLS and out["approved"]
        assert (await backend.stored_bytes())[1] == len(DOC.encode())


@pytest.mark.parametrize("durability", ["batch", "off"])
async def test_group_commits_write_their_blobs(backend: Backend, durability: str) -> None:
    async with runtime(backend, durability) as rt:
        run_id = await _parked(rt)
        await rt.store.flush()
        assert (await backend.stored_bytes())[1] == len(DOC.encode())
        events = await rt.events(run_id)
        assert [e.data["result"] for e in events if e.kind is EventKind.EFFECT_FINISHED] == [
            DOC
        ] * (N_CALLS + 1)
        assert (await verify(rt)).ok


async def test_resume_in_a_new_process_fork_and_replay_see_the_document(
    backend: Backend,
) -> None:
    async with runtime(backend) as rt:
        run_id = await _parked(rt)
    async with runtime(backend) as rt:  # a new runtime reads the journal back
        state = await rt.state(run_id)
        assert state.values["doc"] == DOC
        out = await (await rt.resume(run_id, True)).result()
        assert out["doc"] == DOC and out["approved"]
        events = await rt.events(run_id)
        at = next(e.seq for e in events if e.kind is EventKind.STEP_FINISHED)
        fork = await rt.fork(run_id, at, effects="reuse")
        assert (await fork.wait()).status is RunStatus.INTERRUPTED
        assert (await rt.state(fork.run_id)).values["doc"] == DOC
        report = await rt.replay(run_id)
        assert report.ok, str(report)
        # The fork copied the events that carry the document: still one blob.
        assert (await backend.sql("SELECT count(*) FROM blobs"))[0][0] == 1


async def test_user_values_that_look_like_references_round_trip(backend: Backend) -> None:
    fake = {"$blob": digest_of(b"x"), "bytes": 1}
    meta = {"fake": fake, "literal": {"$literal": fake}, "both": [{"$blob": 1, "$literal": 2}]}

    g = Graph(Doc, name="lookalike")

    @g.node
    def write(s: Doc) -> dict[str, Any]:
        return {"meta": meta, "doc": DOC}  # large: split, and the look-alikes escaped

    @g.node
    def small(s: Doc) -> dict[str, Any]:
        return {"meta": {**meta, "small": True}}  # short: stored as encoded

    g.edge(START, "write")
    g.edge("write", "small")
    g.edge("small", END)
    async with runtime(backend) as rt:
        handle = await rt.start(g.compile(), {})
        out = await handle.result()
        assert out["meta"] == {**meta, "small": True}
        updates = [
            e.data["update"]
            for e in await rt.events(handle.run_id)
            if e.kind is EventKind.STEP_FINISHED
        ]
        assert updates == [{"meta": meta, "doc": DOC}, {"meta": {**meta, "small": True}}]


async def test_the_command_line_shows_the_document(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mainspring.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    async with runtime(Backend("sqlite", url, path=tmp_path / "cli.db")) as rt:
        run_id = await _parked(rt)

    def show() -> list[dict[str, Any]]:
        result = CliRunner().invoke(app, ["show", run_id, "--json", "--store", url])
        assert result.exit_code == 0, (result.stdout, result.exception)
        return [msgspec.json.decode(line) for line in result.stdout.splitlines()]

    events = await anyio.to_thread.run_sync(show)
    results = [e["data"]["result"] for e in events if e["kind"] == "effect_finished"]
    assert results == [DOC] * (N_CALLS + 1)


# -- integrity ----------------------------------------------------------------------------------


async def test_a_changed_or_lost_blob_is_an_error_on_read_and_a_verify_finding(
    backend: Backend,
) -> None:
    async with runtime(backend) as rt:
        run_id = await _parked(rt)
        digest = digest_of(DOC.encode())
        p = backend.param
        await backend.sql(
            f"UPDATE blobs SET data = {p(1)} WHERE digest = {p(2)}", b"edited", digest
        )
        with pytest.raises(CorruptStoreError, match=f"run '{run_id}'.*{digest}.*no longer hash"):
            await rt.events(run_id)
        report = await verify(rt)
        assert "blob_edited" in report.kinds(), report.findings
        assert any(f.run_id == run_id and f.seq is not None for f in report.findings)

        await backend.sql(f"DELETE FROM blobs WHERE digest = {p(1)}", digest)
        with pytest.raises(CorruptStoreError, match=f"event \\d+ of run '{run_id}'.*{digest}"):
            await rt.store.read(run_id)
        assert "blob_missing" in (await verify(rt)).kinds()


async def test_verify_and_export_of_a_store_with_blobs(backend: Backend) -> None:
    async with runtime(backend) as rt:
        run_id = await _parked(rt)
        assert (await verify(rt)).ok
        lines = [msgspec.json.decode(line) async for line in export_lines(rt)]
    blobs = [r for r in lines if r["type"] == "blob"]
    assert [b["digest"] for b in blobs] == [digest_of(DOC.encode())]
    assert blobs[0]["data"] == DOC and blobs[0]["bytes"] == len(DOC.encode())
    first_ref = next(
        i for i, r in enumerate(lines) if r["type"] == "event" and r["data"].get("$refs")
    )
    assert lines.index(blobs[0]) < first_ref, "a blob comes before the first event using it"
    events = [r for r in lines if r["type"] == "event" and r["run_id"] == run_id]
    assert len(events) > 2 * N_CALLS


async def test_a_run_whose_start_holds_large_metadata_verifies(backend: Backend) -> None:
    async with runtime(backend) as rt:
        note = "n" * 5000  # a large string in the metadata, hashed as a reference
        handle = await rt.start(reader(), {"doc": DOC}, metadata={"user": "u", "note": note})
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
        started = (await rt.events(handle.run_id))[0].data
        assert isinstance(started, RunStarted)
        assert started.metadata is not None and started.metadata["note"] == note
        assert started.input["doc"] == DOC
        assert (await verify(rt)).ok  # the row's metadata is what run_started recorded


async def test_deleting_runs_deletes_the_blobs_no_run_references(backend: Backend) -> None:
    async with runtime(backend) as rt:
        alice = await _parked(rt, user="alice")
        bob = await _parked(rt, user="bob")
        for run_id in (alice, bob):
            await rt.cancel(run_id)
        count = "SELECT count(*) FROM blobs"
        assert (await backend.sql(count))[0][0] == 1  # shared by both runs
        erased = await erase_user(rt, "alice")
        assert [a.run_id for a in erased] == [alice]
        assert (await backend.sql(count))[0][0] == 1, "bob's run still references it"
        assert (await rt.state(bob)).values["doc"] == DOC
        await erase_user(rt, "bob")
        assert (await backend.sql(count))[0][0] == 0, "erasure leaves no document behind"
        assert (await backend.sql("SELECT count(*) FROM blob_refs"))[0][0] == 0
        assert (await verify(rt)).ok


async def test_vacuum_sweeps_blobs_left_unreferenced(backend: Backend) -> None:
    async with runtime(backend) as rt:
        run_id = await _parked(rt)
        p = backend.param
        await backend.sql(
            f"INSERT INTO blobs (digest, data) VALUES ({p(1)}, {p(2)})", "sha256:x", b"y"
        )
        await backend.sql(
            f"INSERT INTO blob_refs (run_id, digest) VALUES ({p(1)}, {p(2)})", "gone", "sha256:z"
        )
        assert await rt.store.vacuum_blobs() == 1  # type: ignore[attr-defined]
        assert (await backend.sql("SELECT count(*) FROM blob_refs"))[0][0] == 1
        assert (await rt.state(run_id)).values["doc"] == DOC


# -- the codec, as pure functions ---------------------------------------------------------------


def test_short_payloads_are_left_as_they_are() -> None:
    data = encode({"step": 1, "update": {"$blob": "sha256:0", "bytes": 1}, "x": "y" * 5000})
    assert split_large(data) == (data, {})
    assert not is_split(data)
    assert join_large(data, lambda wanted: pytest.fail("fetched"), "here") is data


def test_a_payload_nested_too_deep_to_walk_is_stored_as_it_is() -> None:
    deep: Any = "x" * 20_000
    for _ in range(5000):  # deeper than Python's recursion limit lets a walk go
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # encoded where the stack allowed it...
    try:
        data = encode({"step": 1, "update": deep})
    finally:
        sys.setrecursionlimit(limit)  # ...split where it does not
    assert split_large(data) == (data, {})


def test_a_payload_without_large_strings_is_not_split() -> None:
    data = encode({"step": 1, "items": ["short"] * 5000})
    assert split_large(data) == (data, {})


def test_split_payloads_carry_their_digests_first() -> None:
    data = encode({"step": 1, "a": DOC, "b": [DOC, "x" * 5000]})
    stored, blobs = split_large(data)
    assert stored.startswith(PREFIX) and len(stored) < 600
    assert refs(stored) == list(blobs) and len(blobs) == 2
    assert join_large(stored, lambda wanted: blobs, "here") == data


def test_an_edited_reference_is_corruption() -> None:
    stored, blobs = split_large(encode({"step": 1, "a": DOC}))
    edited = stored.replace(next(iter(blobs)).encode(), b"sha256:" + b"0" * 64, 1)  # $refs only
    with pytest.raises(CorruptStoreError, match="does not hold"):
        join_large(edited, lambda wanted: blobs, "event 3 of run 'r'")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["$blob", "$literal", "$refs", "x" * 40, "é" * 11, "\U0001f600" * 10]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["$blob", "$literal", "$refs", "bytes", "a", "b", ""])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["step", "args", "result", "update"]), _json))
def test_split_then_join_gives_back_every_value_exactly(fields: dict[str, Any]) -> None:
    # Thresholds lowered so that the generated strings (up to 40 bytes) do go to blobs.
    data = encode(fields)
    stored, blobs = split_large(data, min_payload=0, min_string=40)
    if blobs:
        assert is_split(stored)
        assert all(digest_of(raw) == digest for digest, raw in blobs.items())
    else:
        assert stored is data
    assert join_large(stored, lambda wanted: {d: blobs[d] for d in wanted}, "here") == data
    # The readers' one-pass test agrees, on bytes (SQLite) and text (PostgreSQL) alike.
    short = encode({"step": 1})
    for rows in ([short, stored], [stored.decode(), short.decode()]):
        assert any_split([(1, "k", 0.0, d) for d in rows]) == bool(blobs)
