"""The audit trail on PostgreSQL: real rows tampered with through asyncpg are caught; a run
parked by one runtime and resumed by another keeps one chain; group-committed runs are
anchored; purge and erasure keep verification passing; signed anchors catch a rewrite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mainspring import RunStatus, Runtime
from mainspring.guard import audit
from mainspring.store._chain import GENESIS, chain_rows

from . import engine_graphs as eg
from ._audit_fixtures import fill
from .conftest import postgres_schema_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pg(anyio_backend: str) -> AsyncIterator[tuple[str, str]]:
    async with postgres_schema_url() as url:
        schema = parse_qs(urlsplit(url).query)["schema"][0]
        yield url, schema


async def _sql(url: str, schema: str, *statements: tuple[Any, ...]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.split("?")[0])
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        for sql, *args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _verify(url: str, **kw: Any) -> audit.Report:
    async with Runtime.open(url, recover="off") as rt:
        return await audit.verify(rt, **kw)


async def _filled(url: str, n: int = 3, **kw: Any) -> list[str]:
    async with Runtime.open(url, **kw) as rt:
        ids = await fill(rt, n)
        assert (await audit.verify(rt)).ok
    return ids


async def test_stored_hashes_are_the_documented_chain(pg: tuple[str, str]) -> None:
    import asyncpg

    url, schema = pg
    ids = await _filled(url, 1)
    conn = await asyncpg.connect(url.split("?")[0])
    try:
        rows = await conn.fetch(
            f'SELECT run_id, seq, kind, ts, data, hash FROM "{schema}".events'
            " WHERE run_id = $1 ORDER BY seq",
            ids[0],
        )
        anchors = await conn.fetch(f'SELECT reason, seq, head FROM "{schema}".anchors ORDER BY pos')
    finally:
        await conn.close()
    again = chain_rows(GENESIS, [tuple(r)[:5] for r in rows])
    assert [r[5] for r in again] == [bytes(r[5]) for r in rows]
    assert [(a[0], a[1]) for a in anchors] == [("created", 2), ("rest", len(rows))]
    assert bytes(anchors[1][2]) == bytes(rows[-1][5])


async def test_each_kind_of_tampering_is_caught(pg: tuple[str, str]) -> None:
    url, schema = pg
    ids = await _filled(url, 4)
    await _sql(
        url, schema,
        ("UPDATE events SET data = replace(data, '\"a\"', '\"X\"') WHERE run_id = $1 AND seq = 3", ids[0]),
        ("DELETE FROM events WHERE run_id = $1 AND seq = 4", ids[1]),
        ("UPDATE events SET seq = -1 WHERE run_id = $1 AND seq = 2", ids[2]),
        ("UPDATE events SET seq = 2 WHERE run_id = $1 AND seq = 5", ids[2]),
        ("UPDATE events SET seq = 5 WHERE run_id = $1 AND seq = -1", ids[2]),
        ("DELETE FROM events WHERE run_id = $1", ids[3]),
        ("DELETE FROM runs WHERE run_id = $1", ids[3]),
    )  # fmt: skip
    report = await _verify(url)
    found = {(f.run_id, f.seq, f.kind) for f in report.findings}
    assert (ids[0], 3, "edited") in found
    assert (ids[1], 4, "deleted") in found
    assert {(ids[2], 2, "reordered"), (ids[2], 5, "reordered")} <= found
    assert (ids[3], None, "run_deleted") in found


async def test_inserted_row_and_deleted_anchor_are_caught(pg: tuple[str, str]) -> None:
    url, schema = pg
    ids = await _filled(url, 3)
    await _sql(
        url, schema,
        ("INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES ($1, 9, 'emitted', 0,"
         " '{\"step\":1,\"task\":0,\"node\":\"a\"}', $2)", ids[0], bytes(32)),
        ("DELETE FROM anchors WHERE pos = 3",),
    )  # fmt: skip
    report = await _verify(url)
    assert (ids[0], 9, "inserted") in {(f.run_id, f.seq, f.kind) for f in report.findings}
    assert any(f.kind == "anchor_deleted" and f.pos == 3 for f in report.findings)


async def test_a_run_resumed_by_another_runtime_continues_its_chain(pg: tuple[str, str]) -> None:
    url, _ = pg
    async with Runtime.open(url) as first:
        handle = await first.start(eg.support, {"text": "big refund"}, run_id="t-1")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
    async with Runtime.open(url) as second:  # another process: its head cache is empty
        await second.resume("t-1", True)
        await second.handle("t-1").result()
        report = await audit.verify(second)
        assert report.ok, report.findings
        anchors = [a for a in await audit.audited(second).audit_anchors() if a.run_id == "t-1"]
    assert [a.reason for a in anchors] == ["created", "rest", "resumed", "rest"]


async def test_group_committed_runs_are_chained_and_anchored(pg: tuple[str, str]) -> None:
    url, _ = pg
    async with Runtime.open(url, durability="batch") as rt:
        import anyio

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(fill, rt, 2)
        report = await audit.verify(rt)
    assert report.ok, report.findings
    assert report.anchors == 20 and report.runs == 10


async def test_purge_erasure_and_signatures(pg: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg
    audit.generate_keys(tmp_path / "k.pem", tmp_path / "p.pem")
    rt = Runtime.open(url)
    audit.sign_anchors(rt, tmp_path / "k.pem")
    async with rt:
        old = await fill(rt, 2, tenant="t1")
        mine = await fill(rt, 1, tenant="t2", user="eve")
        await fill(rt, 1, tenant="t2")
        assert sorted(await audit.purge(rt, {"t1": 0}, now=1e12)) == sorted(old)
        assert [a.run_id for a in await audit.erase_user(rt, "eve", actor="dpo")] == mine
    report = await _verify(url, public_key=tmp_path / "p.pem")
    assert report.ok, report.findings
    assert report.signed == report.anchors == 2 * 4 + 3
    # An attacker with the database, not the key: an edited anchor no longer verifies.
    await _sql(url, schema, ("UPDATE anchors SET actor = 'someone else' WHERE pos = 1",))
    kinds = (await _verify(url, public_key=tmp_path / "p.pem")).kinds()
    assert {"anchor_edited"} <= kinds


async def test_two_stores_writing_anchors_at_once_keep_one_chain(pg: tuple[str, str]) -> None:
    """Two stores (two pools, as two processes would have) anchor runs concurrently: the
    head row serialises them into one unbroken chain."""
    import anyio

    url, _ = pg
    async with Runtime.open(url) as one, Runtime.open(url) as two:
        async with anyio.create_task_group() as tg:
            for rt in (one, two, one, two):
                tg.start_soon(fill, rt, 3)
        report = await audit.verify(one)
    assert report.ok, report.findings
    assert report.anchors == 24 and [a.pos for a in await _all_anchors(url)] == list(range(1, 25))


async def _all_anchors(url: str) -> list[Any]:
    async with Runtime.open(url, recover="off") as rt:
        return list(await audit.audited(rt).audit_anchors())


async def test_rehashed_edit_and_cut_tail_are_caught(pg: tuple[str, str]) -> None:
    import asyncpg

    url, schema = pg
    ids = await _filled(url, 2)
    conn = await asyncpg.connect(url.split("?")[0])
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        prev = await conn.fetchval("SELECT hash FROM events WHERE run_id = $1 AND seq = 2", ids[0])
        row = await conn.fetchrow(
            "SELECT kind, ts, data FROM events WHERE run_id = $1 AND seq = 3", ids[0]
        )
        assert row is not None
        data = row["data"].replace('"a"', '"Z"')
        new = chain_rows(bytes(prev), [(ids[0], 3, row["kind"], row["ts"], data)])[0][5]
        await conn.execute(
            "UPDATE events SET data = $2, hash = $3 WHERE run_id = $1 AND seq = 3",
            ids[0],
            data,
            new,
        )
        await conn.execute("DELETE FROM events WHERE run_id = $1 AND seq > 6", ids[1])
        await conn.execute("UPDATE runs SET last_seq = 6 WHERE run_id = $1", ids[1])
    finally:
        await conn.close()
    found = {(f.run_id, f.seq, f.kind) for f in (await _verify(url)).findings}
    assert (ids[0], 4, "edited") in found  # the break moves to the next record
    assert (ids[1], 7, "truncated") in found  # the finished run's anchor saw it further
