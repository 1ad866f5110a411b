"""The cold archive (LocalArchive) and the tiering policy.

The archive: round trips, find by id/thread/kind/time with pages, tenants kept apart,
remove + compact, and recovery (a torn tail, a lost or corrupt index, a crash between
a segment write and the index commit, an interrupted compaction), with a property test
against a plain dict. Tiering: every rule with a fake clock, dry runs, promotion, and a
crash between the archive write and the delete, on small in-test fakes of the tiers.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.memory.archive import (
    ArchiveCorruptError,
    ArchiveError,
    ArchiveRecord,
    LocalArchive,
    Tiering,
    TieringPolicy,
    TieringReport,
    session_record_id,
)
from mainspring.memory.archive._index import ArchiveIndex
from mainspring.memory.archive.tiering import select_items
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.items import MemoryItem, Source
from mainspring.memory.session.protocol import SessionSnapshot, ThreadActivity
from tests.conftest import service_missing

pytestmark = pytest.mark.anyio

DAY = 86_400.0
ACME = Scope("acme")


def rec(
    id: str,
    *,
    tenant: str = "acme",
    thread: str | None = "t1",
    time: float = 1.0,
    kind: Any = "session",
    data: Any = None,
) -> ArchiveRecord:
    return ArchiveRecord(id=id, kind=kind, tenant=tenant, thread=thread, time=time,
                         archived_at=1000.0, data={"n": id} if data is None else data)  # fmt: skip


def segments(directory: Path) -> list[Path]:
    return sorted((directory / "segments").glob("*.seg"))


async def ids(archive: LocalArchive, **query: Any) -> list[str]:
    query.setdefault("tenant", "acme")
    query.setdefault("limit", 10_000)
    return [r.id for r in await archive.find(**query)]


# -- the archive ---------------------------------------------------------------------------


async def test_a_record_round_trips_and_survives_reopening(tmp_path: Path) -> None:
    data = {"messages": [{"role": "user", "content": "héllo " * 50}], "values": {"n": [1, 2.5]}}
    record = rec("s1", data=data)
    async with LocalArchive(tmp_path) as archive:
        await archive.put([record])
        assert await archive.get("s1", tenant="acme") == record
        assert await archive.get("nope", tenant="acme") is None
    async with LocalArchive(tmp_path) as archive:
        assert await archive.get("s1", tenant="acme") == record


async def test_find_by_thread_kind_and_time_oldest_first_in_pages(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([
            rec(f"r{i:02d}", thread=f"t{i % 3}", time=float(i), kind="item" if i % 2 else "session")
            for i in range(20)
        ])  # fmt: skip
        assert await ids(archive, thread="t1") == ["r01", "r04", "r07", "r10", "r13", "r16", "r19"]
        assert await ids(archive, kind="item", since=4, until=10) == ["r05", "r07", "r09"]
        assert await ids(archive, thread="t0", kind="session") == ["r00", "r06", "r12", "r18"]
        page1 = await ids(archive, limit=8)
        page2 = await ids(archive, limit=8, after=page1[-1])
        page3 = await ids(archive, limit=8, after=page2[-1])
        assert page1 + page2 + page3 == [f"r{i:02d}" for i in range(20)] and len(page3) == 4
        # Equal times are ordered by id, and pages do not skip or repeat them.
        await archive.put([rec(f"same{i}", time=50.0) for i in (3, 1, 2)])
        first = await ids(archive, since=50, limit=2)
        assert first == ["same1", "same2"]
        assert await ids(archive, since=50, after="same2") == ["same3"]
        with pytest.raises(ValueError, match="previous page"):
            await archive.find(tenant="acme", after="never-archived")
        with pytest.raises(ValueError, match="kind="):
            await archive.find(tenant="acme", kind="bogus")  # type: ignore[arg-type]


async def test_tenants_are_kept_apart(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("x", tenant="a", data={"who": "a"}), rec("x", tenant="b", data={"who": "b"})])  # fmt: skip
        a, b = await archive.get("x", tenant="a"), await archive.get("x", tenant="b")
        assert a is not None and b is not None and a.data == {"who": "a"} and b.data == {"who": "b"}
        assert await archive.get("x", tenant="c") is None
        assert await archive.remove(["x"], tenant="a") == 1
        assert (
            await archive.get("x", tenant="a") is None and await archive.get("x", tenant="b") == b
        )
        assert await ids(archive, tenant="a") == [] and await ids(archive, tenant="b") == ["x"]


async def test_a_later_put_of_the_same_id_replaces_the_record(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("s", time=1, data={"v": 1})])
        await archive.put([rec("s", time=2, data={"v": 2})])
        got = await archive.get("s", tenant="acme")
        assert got is not None and got.data == {"v": 2}
        assert await ids(archive) == ["s"]


async def test_remove_writes_a_tombstone_and_compact_reclaims_the_space(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path, segment_bytes=4096) as archive:
        await archive.put([rec(f"r{i}", time=i, data={"text": f"{i} " * 300}) for i in range(40)])
        sizes_before = sum(p.stat().st_size for p in segments(tmp_path))
        assert await archive.remove(["r1", "r2", "r3", "missing"], tenant="acme") == 3
        assert await archive.get("r2", tenant="acme") is None
        # Append-only: removing wrote a tombstone, it rewrote nothing.
        assert sum(p.stat().st_size for p in segments(tmp_path)) > sizes_before
        old = segments(tmp_path)
        report = await archive.compact()
        assert report.records == 37 and report.bytes_after < report.bytes_before
        assert report.segments_before == len(old) and report.segments_after == len(
            segments(tmp_path)
        )
        assert not set(old) & set(segments(tmp_path))  # new files, the old ones gone
        assert len(await ids(archive)) == 37 and await archive.get("r2", tenant="acme") is None
        again = await archive.compact()  # nothing to reclaim: nothing rewritten
        assert again.bytes_after == again.bytes_before and segments(tmp_path) == sorted(
            segments(tmp_path)
        )
        await archive.put([rec("after-compaction", time=99)])
    async with LocalArchive(tmp_path) as archive:
        assert len(await ids(archive)) == 38
        assert (await archive.get("r10", tenant="acme")) == rec(
            "r10", time=10, data={"text": "10 " * 300}
        )


async def test_segments_are_sealed_at_their_size(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path, segment_bytes=4096) as archive:
        for i in range(30):
            await archive.put([rec(f"r{i}", data={"blob": random.randbytes(800).hex()})])
        assert len(segments(tmp_path)) > 3
        assert all(p.stat().st_size < 4096 + 1200 for p in segments(tmp_path))
        assert len(await ids(archive)) == 30


async def test_a_torn_tail_is_ignored_and_writing_goes_on_in_a_new_segment(
    tmp_path: Path,
) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec(f"r{i}", time=i) for i in range(5)])
        await archive.put([rec("last", time=9, data={"big": "x" * 2000})])
    (segment,) = segments(tmp_path)
    with segment.open("r+b") as f:  # a write cut short by a crash
        f.truncate(segment.stat().st_size - 7)
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == [f"r{i}" for i in range(5)]
        assert await archive.get("last", tenant="acme") is None
        await archive.put([rec("new", time=10)])
        assert len(segments(tmp_path)) == 2  # nothing is appended after a tear
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == [*(f"r{i}" for i in range(5)), "new"]
        report = await archive.compact()  # the torn bytes are reclaimed
        assert report.records == 6
        assert await ids(archive) == [*(f"r{i}" for i in range(5)), "new"]


async def test_a_segment_torn_at_its_creation_holds_nothing(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("a")])
    (tmp_path / "segments" / "00000002.seg").write_bytes(b"MSAR")
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("b")])
        assert await ids(archive) == ["a", "b"]


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
async def test_a_lost_or_corrupt_index_is_rebuilt_from_the_segments(
    tmp_path: Path, damage: str
) -> None:
    async with LocalArchive(tmp_path, segment_bytes=4096) as archive:
        await archive.put([rec(f"r{i}", thread=f"t{i % 2}", time=i, data={"x": "y" * 500}) for i in range(20)])  # fmt: skip
        await archive.remove(["r3"], tenant="acme")
        await archive.put([rec("r5", time=5, data={"replaced": True})])
    index = tmp_path / "index.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{index}{extra}").unlink(missing_ok=True)
    if damage == "delete":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"this is not a database" * 100)
    else:
        with index.open("r+b") as f:
            f.truncate(index.stat().st_size // 2)
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == [f"r{i}" for i in range(20) if i != 3]
        assert await ids(archive, thread="t1") == [f"r{i}" for i in range(1, 20, 2) if i != 3]
        r5 = await archive.get("r5", tenant="acme")
        assert r5 is not None and r5.data == {"replaced": True}  # the later put wins


async def test_a_crash_between_the_segment_write_and_the_index_commit_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = LocalArchive(tmp_path)
    await archive.put([rec("before", time=1)])

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(ArchiveIndex, "apply", crash)
    with pytest.raises(RuntimeError):
        await archive.put([rec("unindexed", time=2)])
    monkeypatch.undo()
    # The same object goes on: it reopens, and the frames on disk count as written.
    await archive.put([rec("next", time=3, data={"n": "next"})])
    got = await archive.get("next", tenant="acme")
    assert got is not None and got.data == {"n": "next"}
    assert await ids(archive) == ["before", "unindexed", "next"]

    monkeypatch.setattr(ArchiveIndex, "apply", crash)
    with pytest.raises(RuntimeError):
        await archive.remove(["before"], tenant="acme")
    monkeypatch.undo()
    await archive.aclose()
    async with LocalArchive(tmp_path) as archive:  # opening applies what the index missed
        assert await ids(archive) == ["unindexed", "next"]


async def test_segments_written_after_compacting_everything_away_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("a")])
        await archive.remove(["a"], tenant="acme")
        assert (await archive.compact()).segments_after == 0 and segments(tmp_path) == []

        def crash(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the process died here")

        monkeypatch.setattr(ArchiveIndex, "apply", crash)
        with pytest.raises(RuntimeError):
            await archive.put([rec("b")])
    monkeypatch.undo()
    async with LocalArchive(tmp_path) as archive:  # b's segment is new, not a leftover
        assert await ids(archive) == ["b"]


async def test_an_interrupted_compaction_leaves_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalArchive(tmp_path, segment_bytes=4096) as archive:
        await archive.put([rec(f"r{i}", time=i, data={"x": "z" * 600}) for i in range(12)])
        await archive.remove(["r0", "r1"], tenant="acme")
        await archive.put([rec("r0", time=0.5, data={"back": True})])  # archived again later
    expected = ["r0", *(f"r{i}" for i in range(2, 12))]
    before_compaction = tmp_path.parent / "copy"
    shutil.copytree(tmp_path / "segments", before_compaction)

    # 1. Killed after writing the new segments, before switching the index to them.
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the process died here")

    archive = LocalArchive(tmp_path, segment_bytes=4096)
    monkeypatch.setattr(ArchiveIndex, "switch", crash)
    with pytest.raises(RuntimeError):
        await archive.compact()
    monkeypatch.undo()
    await archive.aclose()
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == expected
        await archive.compact()
        assert await ids(archive) == expected

    # 2. Killed after the switch, before every old segment was deleted: the old ones
    # left are deleted on open; with the index lost as well, replaying all segments in
    # order gives the same records (the removed r1 stays removed, r0 keeps its new data).
    for path in before_compaction.iterdir():
        shutil.copy(path, tmp_path / "segments" / path.name)
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == expected
    for path in before_compaction.iterdir():
        shutil.copy(path, tmp_path / "segments" / path.name)
    (tmp_path / "index.sqlite").unlink()
    async with LocalArchive(tmp_path) as archive:
        assert await ids(archive) == expected
        r0 = await archive.get("r0", tenant="acme")
        assert r0 is not None and r0.data == {"back": True}


async def test_a_damaged_record_is_reported_with_its_place(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("a", data={"x": "y" * 100}), rec("b")])
    (segment,) = segments(tmp_path)
    raw = bytearray(segment.read_bytes())
    raw[30] ^= 0xFF  # bit rot inside record a (its index entry still points there)
    segment.write_bytes(bytes(raw))
    async with LocalArchive(tmp_path) as archive:
        with pytest.raises(ArchiveCorruptError, match=r"00000001\.seg:8"):
            await archive.get("a", tenant="acme")


async def test_one_process_at_a_time_and_foreign_files_are_refused(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        await archive.put([rec("a")])
        with pytest.raises(ArchiveError, match="open in another process"):
            await LocalArchive(tmp_path).get("a", tenant="acme")
    (tmp_path / "segments" / "00000007.seg").write_bytes(b"not ours at all")
    with pytest.raises(ArchiveError, match="not a Mainspring archive segment"):
        await LocalArchive(tmp_path).get("a", tenant="acme")


async def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    async with LocalArchive(tmp_path) as archive:
        with pytest.raises(ValueError, match="kind="):
            await archive.put([rec("a", kind="blob")])
        with pytest.raises(ValueError, match="non-empty id"):
            await archive.put([rec("")])
        with pytest.raises(TypeError, match="JSON data"):
            await archive.put([rec("a", data={"x": object()})])
        with pytest.raises(TypeError, match="list of ids"):
            await archive.remove("a", tenant="acme")
        assert await ids(archive) == []
    with pytest.raises(ArchiveError, match="closed"):
        await archive.get("a", tenant="acme")
    with pytest.raises(ValueError, match="segment_bytes"):
        LocalArchive(tmp_path, segment_bytes=10)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcd"), st.sampled_from(["x", "y"]),
                  st.integers(0, 3)),
        st.tuples(st.just("remove"), st.sampled_from("abcd"), st.sampled_from(["x", "y"])),
        # written to its segment, then the process dies before the index commit
        st.tuples(st.just("put_then_crash"), st.sampled_from("abcd"), st.sampled_from(["x", "y"]),
                  st.integers(0, 3)),
        st.tuples(st.just("compact")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("lose_index")),
    ),
    max_size=25,
)  # fmt: skip


def _crash(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the process died here")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_the_archive_behaves_like_a_dict_through_compactions_and_reopens(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    directory = tmp_path_factory.mktemp("prop")

    async def run() -> None:
        model: dict[tuple[str, str], int] = {}
        archive = LocalArchive(directory, segment_bytes=4096, sync=False)
        for op in ops:
            if op[0] == "put":
                _, id_, tenant, version = op
                await archive.put([rec(id_, tenant=tenant, time=version, data={"v": version, "pad": "p" * 900})])  # fmt: skip
                model[(tenant, id_)] = version
            elif op[0] == "put_then_crash":
                _, id_, tenant, version = op
                await archive.get("-", tenant=tenant)  # opened, so that its index exists
                setattr(archive._index, "apply", _crash)  # noqa: B010 (an instance's method)
                with pytest.raises(RuntimeError):
                    await archive.put([rec(id_, tenant=tenant, time=version, data={"v": version})])
                model[(tenant, id_)] = version  # on disk: opening applies it
                await archive.aclose()
                archive = LocalArchive(directory, segment_bytes=4096, sync=False)
            elif op[0] == "remove":
                _, id_, tenant = op
                removed = await archive.remove([id_], tenant=tenant)
                assert removed == int(model.pop((tenant, id_), None) is not None)
            elif op[0] == "compact":
                await archive.compact()
            else:
                await archive.aclose()
                if op[0] == "lose_index":
                    (directory / "index.sqlite").unlink(missing_ok=True)
                archive = LocalArchive(directory, segment_bytes=4096, sync=False)
        for tenant in ("x", "y"):
            found = await archive.find(tenant=tenant, limit=100)
            assert {r.id: r.data["v"] for r in found} == {
                i: v for (t, i), v in model.items() if t == tenant
            }
        await archive.aclose()

    anyio.run(run)


# -- tiering, on fakes of the two tiers ----------------------------------------------------


class Clock:
    def __init__(self, now: float = 100 * DAY) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSessions:
    """Session memory as tiering sees it: threads with values, messages and an activity
    time. ``fail_clear`` simulates a crash after the archive write, before the delete."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.threads_: dict[tuple[str, str], SessionSnapshot] = {}
        self.fail_clear = False
        self.touch_on_snapshot: str | None = None  # a message arrives during the move

    def write(self, thread: str, *, tenant: str = "acme", at: float, **values: Any) -> None:
        self.threads_[(tenant, thread)] = SessionSnapshot(
            thread, tenant, values=values, messages=[{"role": "user", "content": thread}],
            last_active=at,
        )  # fmt: skip

    async def threads(self, *, tenant: str = "", idle_for: float = 0) -> list[ThreadActivity]:
        return [
            ThreadActivity(s.thread, s.tenant, s.last_active)
            for s in self.threads_.values()
            if s.tenant == tenant and self.clock() - s.last_active >= idle_for
        ]

    async def snapshot(self, thread: str, *, tenant: str = "") -> SessionSnapshot:
        snap = self.threads_[(tenant, thread)]
        if self.touch_on_snapshot == thread:
            self.touch_on_snapshot = None
            self.threads_[(tenant, thread)] = msgspec.structs.replace(
                snap, last_active=self.clock()
            )
        return snap

    async def restore(self, snapshot: SessionSnapshot) -> None:
        assert isinstance(snapshot, SessionSnapshot)
        self.threads_[(snapshot.tenant, snapshot.thread)] = snapshot

    async def clear_if_unchanged(
        self, thread: str, last_active: float, *, tenant: str = ""
    ) -> bool:
        if self.fail_clear:
            raise RuntimeError("the process died here")
        snap = self.threads_.get((tenant, thread))
        if snap is None or snap.last_active != last_active:
            return False
        del self.threads_[(tenant, thread)]
        return True


class FakeSemantic:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: dict[str, MemoryItem] = {}
        self.fail_forget = False
        self.update_during_move: str | None = None

    def put(self, id: str, *, scope: Scope = ACME, **fields: Any) -> MemoryItem:
        item = MemoryItem(id=id, text=f"fact {id}", scope=scope, **fields)
        self.items[id] = item
        return item

    async def list(
        self,
        scope: Scope,
        *,
        include_superseded: bool = False,
        limit: int = 100,
        after: str | None = None,
    ) -> list[MemoryItem]:
        found = sorted(
            (i for i in self.items.values() if scope.matches(i.scope)
             and (include_superseded or i.superseded_by is None)
             and (after is None or i.id > after)),
            key=lambda i: i.id,
        )  # fmt: skip
        return found[:limit]

    async def get(self, id: str, *, tenant: str = "") -> MemoryItem | None:
        item = self.items.get(id)
        return item if item is not None and item.scope.tenant == tenant else None

    async def forget_unchanged(self, items: Sequence[MemoryItem], *, tenant: str) -> Sequence[str]:
        if self.fail_forget:
            raise RuntimeError("the process died here")
        if self.update_during_move in self.items:  # a write lands while it is archived
            id = self.update_during_move
            self.items[id] = msgspec.structs.replace(self.items[id], updated_at=self.clock())
        gone = [
            i.id
            for i in items
            if (now := self.items.get(i.id)) is not None
            and now.scope.tenant == tenant
            and now.updated_at == i.updated_at
        ]
        for id in gone:
            del self.items[id]
        return gone

    async def add(
        self,
        text: str,
        *,
        scope: Scope,
        metadata: dict[str, Any] | None = None,
        key: str | None = None,
        valid_from: float | None = None,
        source: Source | None = None,
        id: str | None = None,
    ) -> str:
        assert id is not None
        now = self.clock()
        self.items[id] = MemoryItem(id=id, text=text, scope=scope, metadata=metadata or {},
                                    key=key, valid_from=valid_from, source=source,
                                    recorded_at=now, updated_at=now)  # fmt: skip
        return id


class RestoringSemantic(FakeSemantic):
    async def restore(self, items: Sequence[MemoryItem]) -> None:
        self.items.update({item.id: item for item in items})


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_idle_sessions_move_to_the_archive_and_come_back(
    tmp_path: Path, clock: Clock
) -> None:
    sessions = FakeSessions(clock)
    sessions.write("old", at=clock.now - 2 * DAY, plan="ship it")
    sessions.write("fresh", at=clock.now - 60)
    sessions.write("other-tenant", tenant="beta", at=clock.now - 3 * DAY)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(
            TieringPolicy(session_idle=DAY),
            archive,
            sessions,
            clock=clock,
            tenants=["acme", "beta"],
        )
        report = await tiering.run_once(tenant="acme")
        old_id = session_record_id("old", clock.now - 2 * DAY)
        assert [(m.kind, m.id, m.thread, m.reason) for m in report.moved] == [
            ("session", old_id, "old", "session_idle")
        ]
        assert set(sessions.threads_) == {("acme", "fresh"), ("beta", "other-tenant")}
        (found,) = await tiering.find(tenant="acme", thread="old")
        assert found.kind == "session" and found.data["values"] == {"plan": "ship it"}
        assert found.time == clock.now - 2 * DAY and found.archived_at == clock.now

        everyone = await tiering.run_once()  # every tenant of ``tenants``
        assert [m.tenant for m in everyone.moved] == ["beta"] and list(tiering.reports) == [
            report,
            everyone,
        ]

        back = await tiering.promote(old_id, tenant="acme")
        assert back.id == old_id and await archive.get(old_id, tenant="acme") is None
        restored = sessions.threads_[("acme", "old")]
        assert restored.values == {"plan": "ship it"} and restored.messages[0]["content"] == "old"
        with pytest.raises(LookupError, match="no archived record"):
            await tiering.promote(old_id, tenant="acme")


async def test_each_item_rule_moves_what_it_says(tmp_path: Path, clock: Clock) -> None:
    now = clock.now
    semantic = FakeSemantic(clock)
    semantic.put("aged", recorded_at=now - 40 * DAY, updated_at=now - 40 * DAY, accessed_at=now)
    semantic.put("young", recorded_at=now - DAY, updated_at=now - DAY)
    semantic.put("idle", recorded_at=now - 20 * DAY, updated_at=now - 20 * DAY,
                 accessed_at=now - 15 * DAY)  # fmt: skip
    semantic.put("read-lately", recorded_at=now - 20 * DAY, updated_at=now - 20 * DAY,
                 accessed_at=now - DAY)  # fmt: skip
    replaced = semantic.put("replaced", key="user.city", recorded_at=now - 5 * DAY,
                 updated_at=now - 3 * DAY, superseded_by="young")  # fmt: skip
    policy = TieringPolicy(item_age=30 * DAY, item_idle=10 * DAY, superseded_after=2 * DAY)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(policy, archive, semantic=semantic, clock=clock)
        report = await tiering.run_once(tenant="acme")
        assert {m.id: m.reason for m in report.moved} == {
            "aged": "item_age",
            "idle": "item_idle",
            "replaced": "superseded_after",
        }
        assert sorted(semantic.items) == ["read-lately", "young"]
        aged = await archive.get("aged", tenant="acme")
        assert aged is not None and aged.kind == "item" and aged.time == now  # accessed now
        assert aged.data["text"] == "fact aged"

        # Added again, a superseded fact would become current: it stays in the archive.
        with pytest.raises(ValueError, match="superseded by 'young'"):
            await tiering.promote("replaced", tenant="acme")
        await tiering.promote("aged", tenant="acme")
        assert semantic.items["aged"].text == "fact aged"
        assert await ids(archive) == ["idle", "replaced"]

        # A semantic memory that restores items as they were takes it back, unchanged.
        restoring = RestoringSemantic(clock)
        restoring.items = semantic.items
        tiering = Tiering(policy, archive, semantic=restoring, clock=clock)
        await tiering.promote("replaced", tenant="acme")
        assert restoring.items["replaced"] == replaced
        assert await ids(archive) == ["idle"]


async def test_max_items_per_scope_keeps_the_most_recently_active(
    tmp_path: Path, clock: Clock
) -> None:
    now = clock.now
    semantic = FakeSemantic(clock)
    for i in range(5):
        semantic.put(f"u1-{i}", scope=Scope("acme", user="u1"), recorded_at=now - 10 + i,
                     accessed_at=now if i == 0 else None)  # fmt: skip
    semantic.put("u1-old-fact", scope=Scope("acme", user="u1"), recorded_at=now,
                 updated_at=now, superseded_by="u1-4")  # fmt: skip
    semantic.put("u2-0", scope=Scope("acme", user="u2"), recorded_at=now - 100)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(TieringPolicy(max_items_per_scope=3), archive, semantic=semantic,
                          clock=clock)  # fmt: skip
        dry = await tiering.run_once(tenant="acme", dry_run=True)
        assert sorted(m.id for m in dry.moved) == ["u1-1", "u1-2", "u1-old-fact"]
        assert dry.dry_run and len(semantic.items) == 7 and await ids(archive) == []
        report = await tiering.run_once(tenant="acme")
        assert [m.id for m in report.moved] == [m.id for m in dry.moved]
        assert {m.reason for m in report.moved} == {"max_items_per_scope"}
        assert sorted(semantic.items) == ["u1-0", "u1-3", "u1-4", "u2-0"]


async def test_a_dry_run_moves_nothing(tmp_path: Path, clock: Clock) -> None:
    sessions, semantic = FakeSessions(clock), FakeSemantic(clock)
    sessions.write("old", at=clock.now - 2 * DAY)
    semantic.put("aged", recorded_at=0.0)
    policy = TieringPolicy(session_idle=DAY, item_age=DAY)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(policy, archive, sessions, semantic, clock=clock, tenants=["acme"])
        report = await tiering.run_once(dry_run=True)
        assert [(m.kind, m.reason) for m in report.moved] == [
            ("session", "session_idle"),
            ("item", "item_age"),
        ]
        assert len(sessions.threads_) == 1 and len(semantic.items) == 1
        assert await ids(archive) == []


async def test_a_crash_between_the_archive_write_and_the_delete_duplicates_never_loses(
    tmp_path: Path, clock: Clock
) -> None:
    sessions, semantic = FakeSessions(clock), FakeSemantic(clock)
    sessions.write("old", at=clock.now - 2 * DAY, n=1)
    semantic.put("aged", recorded_at=0.0)
    policy = TieringPolicy(session_idle=DAY, item_age=DAY)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(policy, archive, sessions, semantic, clock=clock)
        sessions.fail_clear = True
        with pytest.raises(RuntimeError):
            await tiering.run_once(tenant="acme")
        # The thread is in the archive and still in session memory.
        assert len(await ids(archive, kind="session")) == 1 and len(sessions.threads_) == 1
        sessions.fail_clear, semantic.fail_forget = False, True
        clock.now += 60
        with pytest.raises(RuntimeError):
            await tiering.run_once(tenant="acme")  # the thread's move finishes, the item's fails
        assert sessions.threads_ == {} and len(await ids(archive, kind="session")) == 1
        assert await ids(archive, kind="item") == ["aged"] and list(semantic.items) == ["aged"]
        semantic.fail_forget = False
        report = await tiering.run_once(tenant="acme")  # archived again under the same id
        assert [(m.kind, m.id) for m in report.moved] == [("item", "aged")]
        assert semantic.items == {} and len(await ids(archive)) == 2
        assert await ids(archive, kind="item") == ["aged"]


async def test_what_changes_during_a_move_stays_where_it_is(tmp_path: Path, clock: Clock) -> None:
    sessions = FakeSessions(clock)
    sessions.write("busy", at=clock.now - 2 * DAY)
    sessions.touch_on_snapshot = "busy"  # a message arrives while the thread is archived
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(TieringPolicy(session_idle=DAY), archive, sessions, clock=clock)
        report = await tiering.run_once(tenant="acme")
        assert report.moved == [] and [m.reason for m in report.kept] == ["changed"]
        assert ("acme", "busy") in sessions.threads_ and await ids(archive) == []


async def test_an_item_updated_during_its_move_stays(tmp_path: Path, clock: Clock) -> None:
    semantic = FakeSemantic(clock)
    semantic.put("a", recorded_at=0.0)
    semantic.put("b", recorded_at=0.0)
    semantic.update_during_move = "b"
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(TieringPolicy(item_age=DAY), archive, semantic=semantic, clock=clock)
        report = await tiering.run_once(tenant="acme")
        assert [m.id for m in report.moved] == ["a"] and [m.id for m in report.kept] == ["b"]
        assert list(semantic.items) == ["b"] and await ids(archive) == ["a"]


async def test_select_items_takes_the_first_rule_that_applies(clock: Clock) -> None:
    item = MemoryItem(id="i", text="t", scope=Scope(), recorded_at=0.0, superseded_by="j")
    policy = TieringPolicy(item_age=1.0, superseded_after=1.0)
    assert select_items([item], policy, clock.now) == [(item, "superseded_after")]
    assert select_items([item], TieringPolicy(), clock.now) == []
    with pytest.raises(ValueError, match="session_idle"):
        TieringPolicy(session_idle=-1)


async def test_run_every_runs_in_the_callers_task_group_and_keeps_its_reports(
    tmp_path: Path, clock: Clock
) -> None:
    sessions = FakeSessions(clock)
    sessions.write("old", at=clock.now - 2 * DAY)
    async with LocalArchive(tmp_path) as archive:
        tiering = Tiering(TieringPolicy(session_idle=DAY), archive, sessions, clock=clock,
                          keep_reports=2, tenants=["acme"])  # fmt: skip
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tiering.run_every, 0.01)
                while len(tiering.reports) < 2:
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert len(tiering.reports) == 2 and sessions.threads_ == {}
        with pytest.raises(ValueError, match="interval"):
            await tiering.run_every(0)


# -- end to end, on the real tiers ---------------------------------------------------------


async def test_end_to_end_a_real_session_goes_to_the_archive_and_back(tmp_path: Path) -> None:
    from mainspring.memory.session import open_session_memory

    async with open_session_memory(None) as sessions, LocalArchive(tmp_path) as archive:
        await sessions.set("t1", "plan", {"step": 2}, tenant="acme")
        await sessions.append("t1", {"role": "user", "content": "hi"}, tenant="acme")
        await sessions.update("t1", "tasks", lambda n: (n or 0) + 1, tenant="acme")
        await sessions.set("t2", "plan", "other tenant", tenant="beta")
        tiering = Tiering(TieringPolicy(session_idle=0), archive, sessions, tenants=["acme"])

        report = await tiering.run_once()
        assert [(m.kind, m.thread, m.tenant) for m in report.moved] == [("session", "t1", "acme")]
        assert await sessions.threads(tenant="acme") == []
        assert len(await sessions.threads(tenant="beta")) == 1
        (record,) = await archive.find(tenant="acme", thread="t1")
        assert record.data["values"] == {"plan": {"step": 2}}

        await tiering.promote(record.id, tenant="acme")
        assert await sessions.get("t1", "plan", tenant="acme") == {"step": 2}
        assert await sessions.messages("t1", tenant="acme") == [{"role": "user", "content": "hi"}]
        shared = await sessions.read_shared("t1", "tasks", tenant="acme")
        assert shared is not None and (shared.value, shared.version) == (1, 1)
        assert await archive.find(tenant="acme") == []


async def test_end_to_end_real_semantic_items_go_to_the_archive_and_back(tmp_path: Path) -> None:
    from mainspring.memory.semantic import SemanticMemory

    scope = Scope("acme", user="ada")
    async with SemanticMemory.open(":memory:") as semantic, LocalArchive(tmp_path) as archive:
        tea = await semantic.add("Ada drinks green tea", scope=scope, metadata={"topic": "food"})
        bike = await semantic.add("Ada rides a red bicycle to work", scope=scope)
        for written in (tea, bike):
            await semantic.settle(written.id)
        tiering = Tiering(TieringPolicy(item_age=0), archive, semantic=semantic, tenants=["acme"])

        report = await tiering.run_once()
        assert sorted(m.id for m in report.moved) == sorted([tea.id, bike.id])
        assert await semantic.list(Scope("acme")) == []
        archived = await archive.find(tenant="acme", kind="item")
        assert {r.id for r in archived} == {tea.id, bike.id}

        await tiering.promote(tea.id, tenant="acme")
        back = await semantic.get(tea.id, tenant="acme")
        assert back is not None and back.text == "Ada drinks green tea"
        assert back.scope == scope and back.metadata == {"topic": "food"}
        assert [r.id for r in await archive.find(tenant="acme")] == [bike.id]


async def test_a_superseded_item_comes_back_superseded_not_current(tmp_path: Path) -> None:
    from mainspring.memory.semantic import SemanticMemory

    scope = Scope("acme", user="ada")
    async with SemanticMemory.open(":memory:") as semantic, LocalArchive(tmp_path) as archive:
        paris = await semantic.add("Ada lives in Paris", scope=scope, key="ada.city")
        berlin = await semantic.add("Ada lives in Berlin", scope=scope, key="ada.city")
        await semantic.settle()
        policy = TieringPolicy(superseded_after=0)
        tiering = Tiering(policy, archive, semantic=semantic, tenants=["acme"])
        report = await tiering.run_once()
        assert [m.id for m in report.moved] == [paris.id]

        await tiering.promote(paris.id, tenant="acme")
        back = await semantic.get(paris.id, tenant="acme")
        current = await semantic.get(berlin.id, tenant="acme")
        assert back is not None and back.superseded_by == berlin.id  # as it was
        assert current is not None and current.superseded_by is None  # still the current fact
        hits = await semantic.search("where does Ada live?", scope=scope)
        assert [h.item.text for h in hits] == ["Ada lives in Berlin"]


# -- the docs ------------------------------------------------------------------------------


def test_the_docs_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "memory-archive.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S)
    assert block is not None, "docs/memory-archive.md has a python example"
    exec(compile(block.group(1), "docs/memory-archive.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "would move: ['support-42']" in out
    assert "moved: session support-42 (session_idle)" in out and "still hot: []" in out
    assert "archived: Where is my order?" in out and "promoted back: A-1001" in out


# -- writes racing a tiering run: none acknowledged is ever lost ------------------------------


async def test_no_item_update_is_lost_to_a_concurrent_tiering_run(tmp_path: Path) -> None:
    from mainspring.memory.semantic import SemanticMemory

    async with SemanticMemory.open(":memory:") as semantic, LocalArchive(tmp_path) as archive:
        added = await semantic.add_many([f"fact number {i}" for i in range(300)], scope=ACME)
        ids = [r.id for r in added]
        tiering = Tiering(TieringPolicy(item_age=0), archive, semantic=semantic,
                          tenants=["acme"], batch=300)  # fmt: skip
        acknowledged: list[str] = []
        reports: list[TieringReport] = []

        async def update_each() -> None:
            for id in ids:
                try:
                    await semantic.update(id, tenant="acme", metadata={"v": "updated"})
                except KeyError:  # archived and forgotten before this update
                    continue
                acknowledged.append(id)
                await anyio.sleep(0)

        async def tier() -> None:
            reports.append(await tiering.run_once())

        async with anyio.create_task_group() as tg:
            tg.start_soon(update_each)
            tg.start_soon(tier)

        (report,) = reports
        moved, kept = {m.id for m in report.moved}, {m.id for m in report.kept}
        assert moved | kept == set(ids) and not moved & kept
        archived = {r.id: r for r in await archive.find(tenant="acme", limit=1000)}
        assert set(archived) == moved  # what stayed has no archived copy
        for id in acknowledged:  # in exactly one place, with the update
            item = await semantic.get(id, tenant="acme")
            where = [] if item is None else [item.metadata]
            where += [archived[id].data["metadata"]] if id in archived else []
            assert where == [{"v": "updated"}], id
        # How many updates beat the run is the scheduler's (the forced interleaving is
        # tested on its own); what must hold in every interleaving is checked above.
        assert acknowledged


@pytest.mark.parametrize("name", ["local", "redis"])
async def test_no_session_write_is_lost_to_a_concurrent_tiering_run(
    name: str, tmp_path: Path
) -> None:
    from mainspring.memory.session import LocalSessionMemory, SessionMemory
    from tests.test_session_memory import REDIS_URL, drop_prefix, redis_unavailable

    prefix = f"ms:test:{random.getrandbits(48):012x}:"
    sessions: SessionMemory
    if name == "local":
        sessions = LocalSessionMemory()  # the real clock
    else:
        if (reason := redis_unavailable()) is not None:
            service_missing(reason)
        from mainspring.memory.session.redis import RedisSessionMemory

        sessions = RedisSessionMemory(REDIS_URL, prefix=prefix)
    threads = [f"t{i}" for i in range(40)]
    try:
        async with LocalArchive(tmp_path) as archive:
            for thread in threads:
                await sessions.set(thread, "k", "v", tenant="acme")
            tiering = Tiering(TieringPolicy(session_idle=0), archive, sessions,
                              tenants=["acme"])  # fmt: skip
            acknowledged: dict[str, list[str]] = {thread: [] for thread in threads}
            reports: list[TieringReport] = []
            done = anyio.Event()

            async def keep_appending(thread: str) -> None:  # in bursts, until the run is over
                rng = random.Random(thread)
                for n in itertools.count():
                    await anyio.sleep(rng.choice([0, 0, 0, 0.002]))
                    if done.is_set():
                        return
                    await sessions.append(thread, f"m{n}", tenant="acme")
                    acknowledged[thread].append(f"m{n}")

            async def tier() -> None:
                reports.append(await tiering.run_once())
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(tier)
                for thread in threads:
                    tg.start_soon(keep_appending, thread)

            for thread in threads:  # every message, in one place: archived, then hot
                (*cold,) = await archive.find(tenant="acme", thread=thread)
                assert len(cold) <= 1
                hot = await sessions.messages(thread, tenant="acme")
                archived = cold[0].data["messages"] if cold else []
                assert archived + hot == acknowledged[thread], thread
            (report,) = reports
            # Which threads the writes beat is up to the scheduler (all, some or none): what
            # must hold in every interleaving is the check above. The forced interleaving is
            # test_a_write_landing_just_before_the_delete_keeps_the_thread.
            assert len(report.moved) + len(report.kept) == len(threads)
    finally:
        if name == "redis":
            await drop_prefix(prefix)
        await sessions.aclose()


@pytest.mark.parametrize("name", ["local", "redis"])
async def test_a_write_landing_just_before_the_delete_keeps_the_thread(
    name: str, tmp_path: Path
) -> None:
    """The narrowest window, forced: a message is acknowledged after the archive write,
    right before the conditional clear runs (a plain check-then-clear lost it)."""
    from mainspring.memory.session import LocalSessionMemory, SessionMemory
    from tests.test_session_memory import REDIS_URL, drop_prefix, redis_unavailable

    prefix = f"ms:test:{random.getrandbits(48):012x}:"
    sessions: SessionMemory
    if name == "local":
        sessions = LocalSessionMemory()
    else:
        if (reason := redis_unavailable()) is not None:
            service_missing(reason)
        from mainspring.memory.session.redis import RedisSessionMemory

        sessions = RedisSessionMemory(REDIS_URL, prefix=prefix)

    class WriteFirst:  # the session tier, with a write racing in before each clear
        def __getattr__(self, attr: str) -> Any:
            return getattr(sessions, attr)

        async def clear_if_unchanged(self, thread: str, last: float, *, tenant: str) -> bool:
            await sessions.append(thread, "just in time", tenant=tenant)
            return await sessions.clear_if_unchanged(thread, last, tenant=tenant)

    try:
        async with LocalArchive(tmp_path) as archive:
            await sessions.set("t", "k", "v", tenant="acme")
            tiering = Tiering(TieringPolicy(session_idle=0), archive, WriteFirst(),  # type: ignore[arg-type]
                              tenants=["acme"], clock=lambda: 1e12)  # fmt: skip
            report = await tiering.run_once()
            assert report.moved == [] and [m.thread for m in report.kept] == ["t"]
            assert await sessions.messages("t", tenant="acme") == ["just in time"]
            assert await sessions.get("t", "k", tenant="acme") == "v"
            assert await archive.find(tenant="acme") == []
    finally:
        if name == "redis":
            await drop_prefix(prefix)
        await sessions.aclose()


async def test_forget_unchanged_keeps_an_item_updated_after_it_was_read() -> None:
    """The interleaving a tiering run can meet, forced: the item is read (and archived),
    then updated, then the run deletes what did not change: the update stays."""
    from mainspring.memory.semantic import SemanticMemory

    async with SemanticMemory.open(":memory:") as semantic:
        first, second = await semantic.add_many(["fact one", "fact two"], scope=ACME)
        read = await semantic.list(ACME)
        await semantic.update(first.id, tenant="acme", metadata={"v": "updated"})
        deleted = await semantic.forget_unchanged(read, tenant="acme")
        assert deleted == [second.id]
        kept = await semantic.get(first.id, tenant="acme")
        assert kept is not None and kept.metadata == {"v": "updated"}
