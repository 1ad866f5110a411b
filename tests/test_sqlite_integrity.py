"""Damaged, empty, orphaned, replaced or read-only SQLite store files: refused clearly, left untouched.

The stores here are made by the real store; the damage is done to their bytes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anyio
import pytest

from mainspring.errors import CorruptStoreError, NotAStoreError, StoreError
from mainspring.events import EventKind
from mainspring.store import Durability, RunRecord, RunStatus, Snapshot
from mainspring.store import _sqlite_integrity as integrity
from mainspring.store.sqlite import SQLiteStore
from tests.journal_data import event
from tests.test_sqlite_store import digest, side_files, url_of

pytestmark = pytest.mark.anyio

PAGE = 4096


async def fill(path: Path, runs: int, events: int, *, close: bool = True) -> SQLiteStore:
    """A store of ``runs`` finished runs of ``events`` ~450-byte events each."""
    store = SQLiteStore(url_of(path))
    await store.open()
    now = time.time()
    for n in range(runs):
        run_id = f"run-{n:04d}"
        journal = [event(run_id, 1, EventKind.RUN_STARTED, now)]
        journal += [
            event(run_id, seq, EventKind.STEP_FINISHED, now, {"text": f"{seq:04x}" * 110})
            for seq in range(2, events)
        ]
        journal.append(event(run_id, events, EventKind.FINISHED, now))
        record = RunRecord(run_id, "g", None, RunStatus.FINISHED, now, now)
        await store.create_run(record, journal, Durability.OFF)
    await store.flush()
    if close:
        await store.aclose()
    return store


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~2.5 MB: the events b-tree is three levels deep, so it has interior pages below its root."""
    path = tmp_path_factory.mktemp("template") / "big.db"
    anyio.run(fill, path, 60, 90)
    return path


@pytest.fixture
def store_copy(big_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    shutil.copy(big_store, path)
    return path


def read_page(path: Path, pgno: int) -> bytes:
    with path.open("rb") as f:
        f.seek((pgno - 1) * PAGE)
        return f.read(PAGE)


def children(page: bytes) -> list[int]:
    """The child page numbers of an interior b-tree page (not page 1)."""
    ncells = struct.unpack_from(">H", page, 3)[0]
    pointers = struct.unpack_from(f">{ncells}H", page, 12)
    return [struct.unpack_from(">I", page, p)[0] for p in pointers] + [
        struct.unpack_from(">I", page, 8)[0]
    ]


def events_pages(path: Path) -> tuple[int, list[int]]:
    """The root of the events table and its interior pages one level below the root."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'events'"
        ).fetchone()
    finally:
        conn.close()
    assert read_page(path, root)[0] == 5, "the events root is an interior table page"
    below = children(read_page(path, root))
    interior = [p for p in below if read_page(path, p)[0] == 5]
    assert interior, "the fixture is too small: the events b-tree has only two levels"
    return root, interior


def damage(path: Path, pgno: int, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek((pgno - 1) * PAGE + offset)
        f.write(data)


@pytest.fixture(params=["quick_check", "walk"])
def check_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both open-time checks: the full quick_check of small files and the walk of large ones."""
    bound = 1 << 40 if request.param == "quick_check" else 0
    monkeypatch.setattr(integrity, "FULL_CHECK_BYTES", bound)
    return str(request.param)


async def assert_refused_as_corrupt(path: Path, *words: str) -> str:
    before, files_before = digest(path), side_files(path)
    store = SQLiteStore(url_of(path))
    with pytest.raises(CorruptStoreError) as caught:
        await store.open()
    message = str(caught.value)
    for word in (str(path), "left untouched", "mainspring doctor", "backup", *words):
        assert word in message, message
    assert digest(path) == before, "a refused file must be left byte for byte as it was"
    assert side_files(path) == files_before == []
    return message


# --- damaged files are refused on open ----------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "cells"])
async def test_a_damaged_interior_page_is_refused_before_any_write(
    store_copy: Path, check_mode: str, where: str
) -> None:
    _, interior = events_pages(store_copy)
    middle = interior[len(interior) // 2]
    if where == "header":  # a garbled page header and start of the cell pointers
        damage(store_copy, middle, 0, bytes(range(7, 71)))
    else:  # garbled child pointers at the end of the page, where cells are written
        damage(store_copy, middle, PAGE - 64, b"\xa5" * 64)
    await assert_refused_as_corrupt(store_copy)


async def test_a_right_edge_that_loops_is_refused_not_walked_forever(
    store_copy: Path, check_mode: str
) -> None:
    root, _ = events_pages(store_copy)
    damage(store_copy, root, 8, struct.pack(">I", root))  # the right-most child: the root again
    with anyio.fail_after(10):
        await assert_refused_as_corrupt(store_copy)


async def test_a_damaged_leaf_is_refused_by_the_full_check_of_a_small_file(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(integrity, "FULL_CHECK_BYTES", 1 << 40)
    _, interior = events_pages(store_copy)
    leaf = children(read_page(store_copy, interior[0]))[3]
    damage(store_copy, leaf, 0, b"\x00" * 16)
    await assert_refused_as_corrupt(store_copy)


async def test_a_truncated_file_is_refused(store_copy: Path, check_mode: str) -> None:
    size = store_copy.stat().st_size
    os.truncate(store_copy, size // 2 // PAGE * PAGE)  # half a copy, cut at a page boundary
    await assert_refused_as_corrupt(store_copy)


async def test_a_damaged_freelist_is_refused(tmp_path: Path, check_mode: str) -> None:
    path = tmp_path / "free.db"
    async with SQLiteStore(url_of(path)) as store:
        run_id = "r"
        await store.create_run(
            RunRecord(run_id, "g", None, RunStatus.RUNNING, 0, 0), [], Durability.SYNC
        )
        # A large snapshot replaced by a small one frees its overflow pages.
        await store.save_snapshot(Snapshot(run_id, 0, {"big": "x" * 200_000}))
        await store.save_snapshot(Snapshot(run_id, 0, {"small": 1}))
    trunk = struct.unpack_from(">I", read_page(path, 1), 32)[0]
    assert trunk, "the fixture has no free pages"
    damage(path, trunk, 0, b"\xff" * 8)  # next trunk and leaf count out of range
    await assert_refused_as_corrupt(path, "freelist")


async def test_a_healthy_large_store_opens_with_a_bounded_check(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the bound, open walks interior pages only (never a full quick_check): cheap
    enough to do every time. (What it costs is measured, not asserted: a timed check
    failed on a loaded machine.)"""
    assert store_copy.stat().st_size > integrity.FULL_CHECK_BYTES
    full_checks: list[object] = []
    monkeypatch.setattr(integrity, "_quick_check", lambda *args: full_checks.append(args))
    conn = sqlite3.connect(f"{store_copy.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        integrity.check_integrity(conn, store_copy, wal=False)
    finally:
        conn.close()
    assert full_checks == []
    async with SQLiteStore(url_of(store_copy)) as store:
        assert len(await store.read("run-0007")) == 90


async def test_damage_met_later_is_reported_as_corrupt_on_read(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged leaf in a large file passes the open-time walk; a read that meets it is
    refused as corrupt, with the way out."""
    monkeypatch.setattr(integrity, "FULL_CHECK_BYTES", 0)
    _, interior = events_pages(store_copy)
    leaf = children(read_page(store_copy, interior[0]))[3]
    damage(store_copy, leaf, 8, struct.pack(">H", PAGE - 10))  # its first cell: off the page
    async with SQLiteStore(url_of(store_copy)) as store:
        with pytest.raises(CorruptStoreError, match="mainspring doctor"):
            for n in range(60):
                assert len(await store.read(f"run-{n:04d}")) == 90


def right_edge_leaf(path: Path) -> int:
    pgno, _ = events_pages(path)
    while (page := read_page(path, pgno))[0] == 5:
        pgno = struct.unpack_from(">I", page, 8)[0]
    return pgno


async def test_an_append_to_a_page_whose_cell_runs_off_it_is_refused_not_written(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cell_size_check: the open-time walk reads no cell, so this damage on the page appends
    go to passes it; the writer's connection then refuses the page instead of writing to it."""
    monkeypatch.setattr(integrity, "FULL_CHECK_BYTES", 0)
    leaf = right_edge_leaf(store_copy)
    damage(store_copy, leaf, PAGE - 100, b"\x81\x00\x01")  # a cell header: 128 bytes of payload
    damage(store_copy, leaf, 8, struct.pack(">H", PAGE - 100))  # the first cell now starts there
    async with SQLiteStore(url_of(store_copy)) as store:
        late = event("run-0059", 91, EventKind.EMITTED, 0.0, {})
        with pytest.raises(CorruptStoreError, match="while writing"):
            await store.append("run-0059", 90, [late])
        got = await store.get_run("run-0059")
        assert got is not None and got.last_seq == 90


async def test_cell_size_check_is_on_for_every_connection(tmp_path: Path) -> None:
    async with SQLiteStore(url_of(tmp_path / "s.db")) as store:
        await store.flush()
        writer = store._writer
        assert writer is not None
        assert writer._conn.execute("PRAGMA cell_size_check").fetchone()[0] == 1
        assert (
            await store._readers.run(lambda c: c.execute("PRAGMA cell_size_check").fetchone()[0])
            == 1
        )


# --- empty files and explicit creation ----------------------------------------------------------


async def test_an_empty_file_is_refused_unless_creation_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = SQLiteStore(url_of(path))
    with pytest.raises(NotAStoreError) as caught:
        await store.open()
    message = str(caught.value)
    for word in (str(path), "empty", "left untouched", "create=true"):
        assert word in message, message
    assert path.stat().st_size == 0 and side_files(path) == []
    async with SQLiteStore(url_of(path), create=True) as created:
        assert await created.list_runs() == []
    async with SQLiteStore(url_of(path)) as reopened:  # a store now: no option needed
        assert await reopened.list_runs() == []


async def test_an_empty_sqlite_database_is_refused_unless_creation_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")  # writes the header: a SQLite file with no tables
    conn.close()
    assert path.stat().st_size > 0
    before = digest(path)
    with pytest.raises(NotAStoreError, match="no tables"):
        await SQLiteStore(url_of(path)).open()
    assert digest(path) == before
    async with SQLiteStore(f"{url_of(path)}?create=true") as created:
        assert await created.list_runs() == []


async def test_a_missing_file_is_still_created(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with SQLiteStore(url_of(path)) as store:
        assert await store.list_runs() == []
    assert path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"], "no temporary file is left"


def test_concurrent_creators_of_one_new_file_all_open_it(tmp_path: Path) -> None:
    """A new store appears whole: nobody racing to create it meets a half-made, empty file."""
    path = tmp_path / "raced.db"
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    async def one() -> None:
        store = SQLiteStore(url_of(path))
        barrier.wait()
        async with store:
            await store.create_run(
                RunRecord(uuid.uuid4().hex, "g", None, RunStatus.RUNNING, 0, 0), [], Durability.SYNC
            )

    def thread() -> None:
        try:
            anyio.run(one)
        except BaseException as exc:
            errors.append(exc)

    for _ in range(5):
        path.unlink(missing_ok=True)
        threads = [threading.Thread(target=thread) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
        conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raced.db"]


@pytest.mark.parametrize(
    ("query", "words"),
    [("create=maybe", "create=true or create=false"), ("mode=ro", "unknown option 'mode'")],
)
def test_bad_url_options_are_explained(query: str, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        SQLiteStore(f"sqlite:///x.db?{query}")


# --- files that are not what they seem ----------------------------------------------------------


async def test_a_wal_file_without_its_store_is_refused_untouched(tmp_path: Path) -> None:
    """A -wal left behind by a moved or deleted store would be deleted, or applied to a new file."""
    source = tmp_path / "source.db"
    store = await fill(source, 2, 10, close=False)
    try:
        shutil.copy(f"{source}-wal", tmp_path / "moved.db-wal")
    finally:
        await store.aclose()
    orphan = tmp_path / "moved.db-wal"
    before = digest(orphan)
    for prepare in (lambda p: None, Path.touch):
        path = tmp_path / "moved.db"
        prepare(path)
        existed = path.exists()
        with pytest.raises(NotAStoreError) as caught:
            await SQLiteStore(url_of(path), create=True).open()
        assert str(orphan) in str(caught.value) and "left untouched" in str(caught.value)
        assert digest(orphan) == before
        assert path.exists() == existed
        path.unlink(missing_ok=True)


async def test_a_file_replaced_while_open_is_not_read_behind_the_writers_back(
    tmp_path: Path,
) -> None:
    path, other = tmp_path / "live.db", tmp_path / "other.db"
    await fill(other, 3, 5)
    async with SQLiteStore(url_of(path)) as store:
        os.replace(other, path)  # e.g. a backup restored over a store in use
        with pytest.raises(StoreError, match="replaced") as caught:
            await store.list_runs()
        assert "reopen" in str(caught.value)
    async with SQLiteStore(url_of(path)) as store:  # reopened, it is the new file
        assert len(await store.list_runs()) == 3


async def test_a_file_deleted_while_open_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    async with SQLiteStore(url_of(path)) as store:
        path.unlink()
        with pytest.raises(StoreError, match="deleted or moved"):
            await store.list_runs()


_OPEN_READ_ONLY = """
import anyio, sys
from mainspring.store.sqlite import SQLiteStore
from mainspring.errors import StoreError
async def main():
    try:
        await SQLiteStore(sys.argv[1]).open()
    except StoreError as exc:
        print("refused:", exc)
    else:
        print("opened")
anyio.run(main)
"""


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _skip_unless_nobody_can_import(root: Path) -> None:
    """Skip when user nobody cannot run this interpreter with the project importable
    (a checkout or venv inside a directory only root may enter, as ``mktemp -d`` makes)."""
    probe = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-c", "import anyio, mainspring"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    if probe.returncode != 0:
        pytest.skip(
            "user nobody cannot import this checkout (a parent directory is private to root); "
            f"clone it under a directory others may enter: {probe.stderr.strip()[-200:]}"
        )


async def test_a_read_only_file_is_refused_before_sqlite_leaves_files_beside_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Refused at once, not after the first write fails; as root, checked as user nobody."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"ms-ro-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o755)
    try:
        path = folder / "ro.db"
        await fill(path, 1, 3)
        path.chmod(0o444)
        command = [sys.executable, "-c", _OPEN_READ_ONLY, url_of(path)]
        root = Path(__file__).resolve().parent.parent
        if os.geteuid() == 0:
            os.chown(folder, 65534, 65534)
            os.chown(path, 65534, 65534)
            command = [*_AS_NOBODY, *command]
            _skip_unless_nobody_can_import(root)
        before = digest(path)
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("refused:"), done.stdout
        assert "read-only" in done.stdout and str(path) in done.stdout
        assert digest(path) == before
        assert side_files(path) == []
    finally:
        shutil.rmtree(folder)
