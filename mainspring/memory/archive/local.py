"""The default archive: append-only, compressed segment files in a local directory.

Layout::

    <directory>/LOCK              held (flock) by the one process that has it open
    <directory>/index.sqlite      (tenant, id), (tenant, thread, time) -> segment, offset, length
    <directory>/segments/00000001.seg ...   frames (see :mod:`._segments`), oldest first

A write appends frames to the newest segment and syncs it, then commits the index;
a segment is sealed (no more appends) once it reaches ``segment_bytes``. Opening the
archive applies to the index whatever the segments hold past its last commit, ignores a
torn tail (and appends to a new segment after it), and rebuilds the index from the
segments when it is missing, corrupt, or disagrees with them. Nothing is ever rewritten
in place: ``compact`` copies the live frames into new segments, switches the index in one
commit, then deletes the old segments (oldest first, so an interruption at any point
leaves the same records, see :meth:`LocalArchive.compact`).

One process at a time: a second opener gets an :class:`~.protocol.ArchiveError`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

import mainspring.memory.archive._segments as seg

from ._index import ArchiveIndex, IndexBroken, LiveRow, Location, index_files
from .protocol import RECORD_KINDS, ArchiveError, ArchiveRecord, CompactReport, RecordKind

T = TypeVar("T")

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class LocalArchive:
    """An :class:`~.protocol.Archive` in a directory (created if missing).

    ``sync``: fsync each write before it returns (off: faster, and a power cut may lose
    the last writes; a process crash still loses nothing). Opens on first use or on
    ``async with``; ``aclose`` releases it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sync: bool = True,
        level: int = 3,
    ) -> None:
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes={segment_bytes} is too small; use at least 4096")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._sync = sync
        self._codec = seg.FrameCodec(level)
        self._lock = anyio.Lock()
        self._index: ArchiveIndex | None = None
        self._lock_fd: int | None = None
        self._readers: dict[int, int] = {}  # segment -> read fd
        self._active: tuple[int, int, int] | None = None  # (segment, append fd, size)
        self._closed = False

    @property
    def _segments_dir(self) -> Path:
        return self.directory / "segments"

    async def __aenter__(self) -> LocalArchive:
        await self._run(lambda: None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the protocol ------------------------------------------------------------------

    async def put(self, records: Sequence[ArchiveRecord]) -> None:
        for record in records:
            _check_record(record)
        if records:
            frames = [seg.Put(r) for r in records]
            await self._run(lambda: self._append([(f, self._codec.encode(f)) for f in frames]))

    async def get(self, id: str, *, tenant: str) -> ArchiveRecord | None:
        def get() -> ArchiveRecord | None:
            where = self._opened().locate(tenant, id)
            return None if where is None else self._read(where)

        return await self._run(get, inline=True)

    async def find(
        self,
        *,
        tenant: str,
        thread: str | None = None,
        kind: RecordKind | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ArchiveRecord]:
        if kind is not None and kind not in RECORD_KINDS:
            raise ValueError(f"kind={kind!r}: use one of {', '.join(RECORD_KINDS)} or None")
        if limit < 1:
            raise ValueError(f"limit={limit}: ask for at least one record")

        def find() -> list[ArchiveRecord]:
            index = self._opened()
            cursor = None
            if after is not None:
                at = index.time_of(tenant, after)
                if at is None:
                    raise ValueError(
                        f"after={after!r} is not an archived record of tenant {tenant!r}; pass "
                        "the id of the last record of the previous page"
                    )
                cursor = (at, after)
            found = index.find(tenant=tenant, thread=thread, kind=kind, since=since,
                               until=until, limit=limit, after=cursor)  # fmt: skip
            return [self._read(where) for where in found]

        return await self._run(find)

    async def remove(self, ids: Sequence[str], *, tenant: str) -> int:
        if isinstance(ids, str):
            raise TypeError("remove() takes a list of ids, not one string")

        def remove() -> int:
            present = self._opened().present(tenant, ids)
            if present:
                tombstone = seg.Remove(tenant=tenant, ids=present, at=time.time())
                self._append([(tombstone, self._codec.encode(tombstone))])
            return len(present)

        return await self._run(remove)

    async def compact(self) -> CompactReport:
        return await self._run(self._compact)

    async def aclose(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_files()

    # -- opening -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T], *, inline: bool = False) -> T:
        """Run ``fn`` under the archive's lock, in a worker thread; ``inline``: on the event
        loop (a get: one index lookup, one read and one decompression, tens of us, less
        than the hop to a thread costs)."""
        try:
            self._lock.acquire_nowait()  # the common case, without two trips through the loop
        except anyio.WouldBlock:
            await self._lock.acquire()
        try:
            if self._closed:
                raise ArchiveError(f"the archive in {self.directory} is closed")
            if self._index is None:
                await anyio.to_thread.run_sync(self._open)
            return fn() if inline else await anyio.to_thread.run_sync(fn)
        finally:
            self._lock.release()

    def _opened(self) -> ArchiveIndex:
        assert self._index is not None
        return self._index

    def _open(self) -> None:
        self._segments_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.directory / "LOCK")
        try:
            for leftover in self._segments_dir.glob("*.tmp"):  # an interrupted compaction's
                leftover.unlink()
            self._index = self._open_index(rebuild=False)
        except BaseException:
            self._close_files()
            raise

    def _open_index(self, *, rebuild: bool) -> ArchiveIndex:
        path = self.directory / "index.sqlite"
        if rebuild:
            for file in index_files(path):
                file.unlink(missing_ok=True)
        try:
            index = ArchiveIndex(path)
        except IndexBroken:
            if rebuild:
                raise ArchiveError(f"cannot create the archive index {path}") from None
            return self._open_index(rebuild=True)
        if not self._catch_up(index):
            self._seal()
            index.close()
            return self._open_index(rebuild=True)
        return index

    def _catch_up(self, index: ArchiveIndex) -> bool:
        """Apply what the segments hold past the index; False: they disagree (rebuild)."""
        known, below = index.segments(), index.compacted_below()
        on_disk = seg.segment_numbers(self._segments_dir)
        if any(n not in on_disk for n in known):
            return False
        for number in on_disk:
            path = seg.segment_path(self._segments_dir, number)
            if number < below and number not in known:  # replaced by a finished compaction
                path.unlink()
                continue
            size = path.stat().st_size
            indexed = known[number].indexed if number in known else 0
            if size < indexed:
                return False
            end = indexed
            if size > indexed or number not in known:
                frames, end = self._codec.scan(path, indexed)
                index.apply(number, frames, end)
            if number == on_disk[-1] and end == size and size < self.segment_bytes:
                self._active = (number, os.open(path, os.O_WRONLY | os.O_APPEND), size)
        return True

    def _close_files(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        self._seal()
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- writing and reading -------------------------------------------------------------

    def _seal(self) -> None:
        if self._active is not None:
            os.close(self._active[1])
            self._active = None

    def _append(self, frames: Sequence[tuple[seg.Frame, bytes]]) -> None:
        """Append frames to the newest segment (a new one when it is sealed), sync it, then
        index them. A failed write seals the segment: nothing is appended after a tear."""
        if self._active is None or self._active[2] >= self.segment_bytes:
            self._seal()
            # Never reuse a number below a compaction's: those are deleted on open.
            numbers = seg.segment_numbers(self._segments_dir)
            number = max([*numbers, self._opened().compacted_below() - 1, 0]) + 1
            fd = seg.create_segment(seg.segment_path(self._segments_dir, number), sync=self._sync)
            self._active = (number, fd, len(seg.MAGIC))
        number, fd, size = self._active
        blob = b"".join(encoded for _, encoded in frames)
        try:
            written = os.write(fd, blob)
            if written != len(blob):
                raise OSError(f"short write: {written} of {len(blob)} bytes")
            if self._sync:
                os.fsync(fd)
        except OSError as exc:
            self._seal()
            raise ArchiveError(f"cannot write to the archive in {self.directory}: {exc}") from exc
        scanned, offset = [], size
        for frame, encoded in frames:
            scanned.append(seg.Scanned(offset, len(encoded), frame))
            offset += len(encoded)
        try:
            self._opened().apply(number, scanned, offset)
        except BaseException:
            # The frames are on disk, the index does not know them: close, so that the
            # next call reopens and catches up (the records then count as written).
            self._close_files()
            raise
        self._active = (number, fd, offset)

    def _read(self, where: Location) -> ArchiveRecord:
        fd = self._readers.get(where.segment)
        if fd is None:
            path = seg.segment_path(self._segments_dir, where.segment)
            try:
                fd = self._readers[where.segment] = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ArchiveError(
                    f"archive segment {path} is missing; restore it, or reopen the archive "
                    "to rebuild the index without it"
                ) from None
        blob = os.pread(fd, where.length, where.offset)
        frame = self._codec.decode(blob, where=lambda: self._place(where))
        if not isinstance(frame, seg.Put):
            raise ArchiveError(f"{self._place(where)} holds a tombstone, not a record")
        return frame.record

    def _place(self, where: Location) -> str:
        return f"{seg.segment_path(self._segments_dir, where.segment)}:{where.offset}"

    # -- compaction ----------------------------------------------------------------------

    def _compact(self) -> CompactReport:
        """Copy the live frames into new segments (numbered after every old one), switch
        the index to them in one commit, then delete the old segments, oldest first.

        An interruption leaves the same records: before the commit, reopening applies the
        new segments as later copies of live records; after it, the old segments left are
        deleted on open. Were the index lost too, replaying every segment in order gives
        the same result, since the copies come after every tombstone and replacement.
        """
        index = self._opened()
        state = index.segments()
        old = sorted(state)
        sizes = {n: seg.segment_path(self._segments_dir, n).stat().st_size for n in old}
        total = sum(sizes.values())
        dead = sum(s.garbage for s in state.values())
        torn = sum(sizes[n] - state[n].indexed for n in old)
        if dead == 0 and torn == 0:
            return CompactReport(len(old), len(old), total, total, index.count())
        self._seal()
        live = index.live()
        first_new = old[-1] + 1
        moved, new = self._copy_live(live, first_new)
        index.switch(moved, new, first_new)
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        for number in old:
            seg.segment_path(self._segments_dir, number).unlink()
        if self._sync:
            seg.sync_directory(self._segments_dir)
        return CompactReport(
            segments_before=len(old),
            segments_after=len(new),
            bytes_before=total,
            bytes_after=sum(new.values()),
            records=len(live),
        )

    def _copy_live(
        self, live: Sequence[LiveRow], first: int
    ) -> tuple[list[tuple[LiveRow, Location]], dict[int, int]]:
        moved: list[tuple[LiveRow, Location]] = []
        new: dict[int, int] = {}
        number, out, size = first - 1, None, 0
        try:
            for row in live:
                if out is None or size >= self.segment_bytes:
                    if out is not None:
                        self._finish_copy(out, number, size, new)
                    number += 1
                    out = _create_tmp(seg.segment_path(self._segments_dir, number))
                    size = len(seg.MAGIC)
                blob = self._read_raw(row)
                out.write(blob)
                moved.append((row, Location(number, size, len(blob))))
                size += len(blob)
            if out is not None:
                self._finish_copy(out, number, size, new)
        except BaseException:
            if out is not None:
                out.close()
            raise
        return moved, new

    def _read_raw(self, row: LiveRow) -> bytes:
        self._read(Location(row.segment, row.offset, row.length))  # verifies the checksum
        return os.pread(self._readers[row.segment], row.length, row.offset)

    def _finish_copy(self, out: Any, number: int, size: int, new: dict[int, int]) -> None:
        out.flush()
        if self._sync:
            os.fsync(out.fileno())
        out.close()
        final = seg.segment_path(self._segments_dir, number)
        os.replace(final.with_suffix(".tmp"), final)
        new[number] = size


def _create_tmp(final: Path) -> Any:
    out = open(final.with_suffix(".tmp"), "wb")  # noqa: SIM115 (closed by _finish_copy)
    out.write(seg.MAGIC)
    return out


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ArchiveError(
            f"the archive in {path.parent} is open in another process (or another "
            "LocalArchive); one process at a time may use a local archive"
        ) from None
    return fd


def _check_record(record: ArchiveRecord) -> None:
    if not isinstance(record, ArchiveRecord):
        raise TypeError(f"put() takes ArchiveRecord values, got {type(record).__name__}")
    if not record.id:
        raise ValueError("an archive record needs a non-empty id")
    if record.kind not in RECORD_KINDS:
        raise ValueError(f"record {record.id!r}: kind={record.kind!r}, use one of {RECORD_KINDS}")
