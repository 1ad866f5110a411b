"""The audit trail on SQLite: each kind of tampering with a real store file is caught and
placed; purge and erasure keep verification passing; signed anchors catch a full rewrite."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from pathlib import Path

import pytest

from mainspring import Runtime
from mainspring.guard import audit
from mainspring.store._chain import GENESIS, Anchor, chain_rows, make_anchor

from ._audit_fixtures import fill

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _store(tmp_path: Path, n: int = 3) -> tuple[str, list[str]]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    async with Runtime.open(url) as rt:
        ids = await fill(rt, n)
        report = await audit.verify(rt)
        assert report.ok, report.findings
        assert report.anchors == 2 * n  # created + finished per run
    return url, ids


async def _verify(url: str, **kw: object) -> audit.Report:
    async with Runtime.open(url, recover="off") as rt:
        return await audit.verify(rt, **kw)  # type: ignore[arg-type]


def _db(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)


def _one(report: audit.Report, kind: str) -> audit.Finding:
    found = [f for f in report.findings if f.kind == kind]
    assert found, (kind, report.findings)
    return found[0]


async def test_untouched_store_verifies_and_every_event_is_chained(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        assert db.execute("SELECT count(*) FROM events WHERE hash IS NULL").fetchone()[0] == 0
        rows = db.execute(
            "SELECT run_id, seq, kind, ts, data, hash FROM events WHERE run_id = ? ORDER BY seq",
            (ids[0],),
        ).fetchall()
    # The stored hashes are the documented formula over the stored bytes.
    again = chain_rows(GENESIS, [r[:5] for r in rows])
    assert [r[5] for r in again] == [r[5] for r in rows]


async def test_edited_payload_is_caught_at_its_seq(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute(
            "UPDATE events SET data = replace(data, 'a', 'X') WHERE run_id = ? AND seq = 3",
            (ids[1],),
        )
    report = await _verify(url)
    f = _one(report, "edited")
    assert (f.run_id, f.seq) == (ids[1], 3)
    assert len(report.findings) == 1


async def test_edited_payload_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        prev, seq, kind, ts, data = db.execute(
            "SELECT (SELECT hash FROM events WHERE run_id = e.run_id AND seq = 2), seq, kind, ts, data"
            " FROM events e WHERE run_id = ? AND seq = 3",
            (ids[0],),
        ).fetchone()
        data = data.replace(b'"a"', b'"Z"') if isinstance(data, bytes) else data
        new = chain_rows(prev, [(ids[0], seq, kind, ts, data + b" ")])[0][5]
        db.execute(
            "UPDATE events SET data = ?, hash = ? WHERE run_id = ? AND seq = 3",
            (data + b" ", new, ids[0]),
        )
    report = await _verify(url)
    f = _one(report, "edited")
    assert (f.run_id, f.seq) == (ids[0], 4)
    assert "record 3 was edited and its hash recomputed" in f.detail


async def test_deleted_row_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE run_id = ? AND seq = 4", (ids[2],))
    report = await _verify(url)
    f = _one(report, "deleted")
    assert (f.run_id, f.seq) == (ids[2], 4)
    assert report.kinds() == {"deleted"}


async def test_deleted_row_with_renumbering_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE run_id = ? AND seq = 3", (ids[0],))
        db.execute("UPDATE events SET seq = -(seq - 1) WHERE run_id = ? AND seq > 3", (ids[0],))
        db.execute("UPDATE events SET seq = -seq WHERE run_id = ? AND seq < 0", (ids[0],))
        db.execute("UPDATE runs SET last_seq = last_seq - 1 WHERE run_id = ?", (ids[0],))
    report = await _verify(url)
    f = _one(report, "deleted")
    assert f.run_id == ids[0] and f.seq == 3


async def test_inserted_row_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        last, ts = db.execute(
            "SELECT max(seq), max(ts) FROM events WHERE run_id = ?", (ids[1],)
        ).fetchone()
        db.execute(
            "INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES (?, ?, 'emitted', ?, ?, ?)",
            (ids[1], last + 1, ts, b'{"step":1,"task":0,"node":"a","data":"forged"}', bytes(32)),
        )
    report = await _verify(url)
    f = _one(report, "inserted")
    assert (f.run_id, f.seq) == (ids[1], last + 1)


async def test_inserted_row_with_renumbering_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute("UPDATE events SET seq = -(seq + 1) WHERE run_id = ? AND seq >= 3", (ids[1],))
        db.execute("UPDATE events SET seq = -seq WHERE run_id = ? AND seq < 0", (ids[1],))
        db.execute(
            "INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES (?, 3, 'emitted', 0, ?, ?)",
            (ids[1], b'{"step":1,"task":0,"node":"a"}', bytes(32)),
        )
        db.execute("UPDATE runs SET last_seq = last_seq + 1 WHERE run_id = ?", (ids[1],))
    report = await _verify(url)
    f = _one(report, "inserted")
    assert (f.run_id, f.seq) == (ids[1], 3)
    assert "edited" not in report.kinds()


@pytest.mark.parametrize(("i", "j"), [(2, 5), (3, 4)])
async def test_swapped_rows_are_caught_as_reordered(tmp_path: Path, i: int, j: int) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute("UPDATE events SET seq = -1 WHERE run_id = ? AND seq = ?", (ids[0], i))
        db.execute("UPDATE events SET seq = ? WHERE run_id = ? AND seq = ?", (i, ids[0], j))
        db.execute("UPDATE events SET seq = ? WHERE run_id = ? AND seq = -1", (j, ids[0]))
    report = await _verify(url)
    assert report.kinds() == {"reordered"}
    assert {(f.run_id, f.seq) for f in report.findings} == {(ids[0], i), (ids[0], j)}


async def test_whole_run_deleted_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        for table in ("events", "runs", "snapshots"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (ids[1],))
    report = await _verify(url)
    f = _one(report, "run_deleted")
    assert f.run_id == ids[1]


async def test_whole_run_deleted_with_its_anchors_is_caught(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        for table in ("events", "runs", "snapshots", "anchors"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (ids[1],))
    report = await _verify(url)
    f = _one(report, "anchor_deleted")
    assert f.pos == 3  # run 0 holds anchors 1 and 2


async def test_anchors_deleted_and_chain_recomputed_needs_a_signature(tmp_path: Path) -> None:
    """Without a key, an attacker who deletes a run and rebuilds the anchor chain passes;
    with signed anchors, the rebuilt ones are caught."""
    from mainspring.guard.audit.signing import generate_keys

    generate_keys(tmp_path / "key.pem", tmp_path / "pub.pem")
    url = f"sqlite:///{tmp_path / 'signed.db'}"
    rt = Runtime.open(url)
    audit.sign_anchors(rt, tmp_path / "key.pem")
    async with rt:
        ids = await fill(rt, 3)
    assert (await _verify(url, public_key=tmp_path / "pub.pem")).ok
    _rebuild_without(url, ids[1])
    assert (await _verify(url)).ok  # the honest limit of an unsigned chain
    report = await _verify(url, public_key=tmp_path / "pub.pem")
    assert "signature_invalid" in report.kinds()


def _rebuild_without(url: str, run_id: str) -> None:
    """What an attacker with the database but not the key can do: delete a run and its
    anchors, and recompute the anchor chain so that every link holds."""
    with _db(url) as db:
        for table in ("events", "runs", "anchors"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        rows = db.execute(
            "SELECT run_id, seq, head, reason, at, actor, detail, sig FROM anchors ORDER BY pos"
        ).fetchall()
        db.execute("DELETE FROM anchors")
        prev = GENESIS
        for pos, (rid, seq, head, reason, at, actor, detail, sig) in enumerate(rows, 1):
            a = make_anchor(prev, pos, rid, seq, head, reason, at, actor, detail)
            db.execute("INSERT INTO anchors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*a[:9], sig))
            prev = a.hash


async def test_truncated_tail_is_caught_by_the_run_row_and_the_rest_anchor(tmp_path: Path) -> None:
    url, ids = await _store(tmp_path)
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE run_id = ? AND seq >= 7", (ids[0],))
    report = await _verify(url)
    assert _one(report, "truncated").run_id == ids[0]
    # The run row fixed too: the anchor of the finished run still saw seq > 6.
    with _db(url) as db:
        db.execute("UPDATE runs SET last_seq = 6 WHERE run_id = ?", (ids[0],))
    report = await _verify(url)
    f = _one(report, "truncated")
    assert f.run_id == ids[0] and f.pos is not None


async def test_purge_and_erasure_keep_verification_passing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    async with Runtime.open(url) as rt:
        old = await fill(rt, 2, tenant="t1", user="ann")
        kept = await fill(rt, 1, tenant="t2", user="bob")
        gone = await audit.purge(rt, {"t1": 0}, actor="retention-job", now=1e12)
        assert sorted(gone) == sorted(old)
        erased = await audit.erase_user(rt, "bob", actor="dpo@example.com")
        assert [a.run_id for a in erased] == kept
        report = await audit.verify(rt)
        assert report.ok, report.findings
        assert len(report.notes) == 3
        assert any("purged" in n and "retention-job" in n for n in report.notes)
        assert any("erased" in n and "dpo@example.com" in n for n in report.notes)
        anchors = await audit.audited(rt).audit_anchors()
        assert "bob" not in " ".join(a.detail for a in anchors)
        assert hashlib.sha256(b"bob").hexdigest() in anchors[-1].detail
        assert await rt.store.get_run(old[0]) is None


async def test_export_lines_carry_hashes_and_the_redaction_hook(tmp_path: Path) -> None:
    import json

    url, ids = await _store(tmp_path, 1)

    def redact(record: dict[str, object]) -> dict[str, object]:
        return {**record, "data": "[redacted]"} if record["type"] == "event" else record

    async with Runtime.open(url, recover="off") as rt:
        lines = [json.loads(x) async for x in audit.export_lines(rt, run=ids[0], redact=redact)]
    events = [r for r in lines if r["type"] == "event"]
    anchors = [r for r in lines if r["type"] == "anchor"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["data"] == "[redacted]" for e in events)
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(events))
    assert anchors[-1]["head"] == events[-1]["hash"]


async def test_administrative_actions_name_their_actor_in_the_chain(tmp_path: Path) -> None:
    from mainspring import RunStatus

    from . import engine_graphs as eg

    url = f"sqlite:///{tmp_path / 'admin.db'}"
    async with Runtime.open(url) as rt:
        approved = await rt.start(eg.support, {"text": "big refund"}, run_id="approved")
        assert (await approved.wait()).status is RunStatus.INTERRUPTED
        await rt.resume("approved", True, actor="alice@example.com")
        await rt.handle("approved").result()
        cancelled = await rt.start(eg.support, {"text": "big refund"}, run_id="cancelled")
        await cancelled.wait()
        await rt.cancel("cancelled", actor="bob")
        forked = await rt.fork("approved", 3, effects="rerun", actor="carol")
        await forked.wait()
        assert (await audit.verify(rt)).ok
        lines = [r async for r in audit.records(rt)]
    data = {(r["run_id"], r["kind"]): r["data"] for r in lines if r["type"] == "event"}
    assert data[("approved", "resumed")]["actor"] == "alice@example.com"
    assert data[("cancelled", "cancelled")]["actor"] == "bob"
    assert data[(forked.run_id, "run_started")]["forked_from"]["actor"] == "carol"
    # The journal without actors is byte for byte what it was: the field is left out.
    assert "actor" not in data[("approved", "run_started")]


async def test_runs_written_without_the_chain_are_noted_and_continue_it(tmp_path: Path) -> None:
    """A store written with the chain off (as one made before it existed): its runs are
    noted as unchained; a parked one resumed with the chain on continues from there."""
    from mainspring import RunStatus
    from mainspring.store.sqlite import SQLiteStore

    from . import engine_graphs as eg

    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    async with Runtime(SQLiteStore(url, audit=False)) as rt:
        await fill(rt, 1)
        handle = await rt.start(eg.support, {"text": "big refund"}, run_id="parked")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
    report = await _verify(url)
    assert report.ok and report.anchors == 0
    assert "2 run(s) carry no hashes" in report.notes[0]
    async with Runtime.open(url) as rt:
        await rt.resume("parked", True)
        await rt.handle("parked").result()
        report = await audit.verify(rt)
    assert report.ok, report.findings
    assert [a.reason for a in await _anchors(url)] == ["resumed", "rest"]


async def _anchors(url: str) -> list[Anchor]:
    async with Runtime.open(url, recover="off") as rt:
        return list(await audit.audited(rt).audit_anchors())


async def test_a_running_runs_tail_cut_after_its_last_anchor_is_not_provable(
    tmp_path: Path,
) -> None:
    """The documented limit: a running run's records after its last anchor, cut together
    with its row's last seq, leave a consistent store. Only its next anchor (at rest) or a
    witness taken after them could tell."""
    import time

    from mainspring.events import Event, StepStarted
    from mainspring.store.records import Durability, RunRecord, RunStatus
    from mainspring.store.sqlite import SQLiteStore

    url = f"sqlite:///{tmp_path / 'running.db'}"
    async with SQLiteStore(url) as store:
        now = time.time()
        await store.create_run(
            RunRecord("r", "g", None, RunStatus.RUNNING, now, now), [], Durability.SYNC
        )
        events = [Event.of("r", i, now, StepStarted(i, 0, "a")) for i in range(1, 6)]
        await store.append("r", 0, events)
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE run_id = 'r' AND seq > 3")
        db.execute("UPDATE runs SET last_seq = 3 WHERE run_id = 'r'")
    assert (await _verify(url)).ok
