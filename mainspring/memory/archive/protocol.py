"""The cold archive's seam: what it holds (:class:`ArchiveRecord`) and what it does
(:class:`Archive`).

The protocol is the object-storage seam too. :class:`~.local.LocalArchive` keeps
records in append-only, compressed segment files in a directory, with an index beside
them; an object-storage backend implements the same six methods over the same segment
format (see ``docs/memory-archive.md``, "Another backend"): sealed segments become
immutable objects, ``get`` becomes a ranged read of one record, ``remove`` a tombstone,
``compact`` new objects and a switch of the index. The tiering policy
(:mod:`.tiering`) and the CLI know only this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from ...errors import StoreError

RecordKind = Literal["session", "item"]
RECORD_KINDS: tuple[RecordKind, ...] = ("session", "item")


class ArchiveRecord(msgspec.Struct, frozen=True):
    """One archived thing: a session's snapshot or a semantic memory item.

    ``id`` is unique within the tenant (a later ``put`` of the same id replaces the
    record). ``time`` is the record's last activity (epoch seconds): what ``find``'s
    ``since``/``until`` select on. ``archived_at`` is when it moved to the archive.
    ``data`` is JSON data: what ``promote`` needs to put it back.
    """

    id: str
    kind: RecordKind
    tenant: str
    thread: str | None
    time: float
    archived_at: float
    data: Any


class CompactReport(msgspec.Struct, frozen=True):
    """What a ``compact()`` did: segments and bytes before and after, records kept."""

    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    records: int  # the live records, all kept; removed and replaced ones and tombstones go


class ArchiveError(StoreError):
    """An archive that cannot be opened, read or written; the message says what to fix."""


class ArchiveCorruptError(ArchiveError):
    """A record's bytes do not match their checksum; the file and offset are named."""


@runtime_checkable
class Archive(Protocol):
    """Cold, append-only storage of records, findable by id, thread, kind and time.

    Every read and removal is scoped by tenant: a record of another tenant is never
    returned, found or removed.
    """

    async def put(self, records: Sequence[ArchiveRecord]) -> None:
        """Store the records durably (all of them, or raise); a record with an id already
        archived for its tenant replaces it."""
        ...

    async def get(self, id: str, *, tenant: str) -> ArchiveRecord | None: ...

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
        """Records of the tenant, oldest ``time`` first (ties by id), with ``since <= time
        < until``; ``after``: the id of the last record of the previous page."""
        ...

    async def remove(self, ids: Sequence[str], *, tenant: str) -> int:
        """Forget records (append-only: a tombstone is written; ``compact`` reclaims the
        space). Returns how many of them were archived."""
        ...

    async def compact(self) -> CompactReport:
        """Rewrite the storage without removed and replaced records, atomically."""
        ...

    async def aclose(self) -> None: ...
