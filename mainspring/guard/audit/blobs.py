"""The blobs a store's events reference (``store/_blobs.py``), for ``verify`` and ``export``.

An event's hash covers its references, and each reference is the SHA-256 of its blob: a
blob changed or deleted behind the store's back breaks no chain, so ``verify`` fetches
each referenced blob and checks it against its digest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ...errors import CorruptStoreError
from ...store._blobs import check_blobs as check_found
from ...store._blobs import digest_of, is_split, join_checked, refs
from ...store.audit import Audited, ChainRow
from .findings import Finding

#: Blobs fetched per read: bounds the memory a verify of a large store takes at once.
_BATCH = 64


class BlobUses:
    """Where each blob is first referenced: ``(run_id, seq)`` by digest."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, int]] = {}

    def add(self, run_id: str, rows: Iterable[ChainRow]) -> None:
        for row in rows:
            for digest in refs(row.data):
                self.first.setdefault(digest, (run_id, row.seq))


async def check_blobs(store: Audited, uses: BlobUses) -> list[Finding]:
    """A finding for each referenced blob that is missing or no longer hashes to its digest
    (at the first event that references it)."""
    findings: list[Finding] = []
    digests = list(uses.first)
    for i in range(0, len(digests), _BATCH):
        chunk = digests[i : i + _BATCH]
        found = await store.audit_blobs(chunk)
        for digest in chunk:
            run_id, seq = uses.first[digest]
            data = found.get(digest)
            if data is None:
                findings.append(
                    Finding(run_id, seq, "blob_missing", f"blob {digest} it references is gone")
                )
            elif digest_of(data) != digest:
                findings.append(
                    Finding(
                        run_id, seq, "blob_edited",
                        f"blob {digest} it references was changed ({len(data)} bytes now)",
                    )
                )  # fmt: skip
    return findings


async def new_blobs(
    store: Audited, rows: Sequence[ChainRow], exported: set[str]
) -> dict[str, bytes]:
    """The blobs ``rows`` reference that are not in ``exported`` yet (added to it)."""
    wanted = [d for row in rows for d in refs(row.data) if d not in exported]
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return {}
    exported.update(wanted)
    found = await store.audit_blobs(wanted)
    return {d: found[d] for d in wanted if d in found}


async def joined_row(store: Audited, row: ChainRow) -> ChainRow:
    """``row`` with the blobs it references put back (for checks that read its values, such
    as ``check_moved``); as stored if they are missing or changed (a finding of its own)."""
    if not is_split(row.data):
        return row
    wanted = refs(row.data)
    found = await store.audit_blobs(wanted)
    try:
        check_found(found, wanted, "")
        return row._replace(data=join_checked(row.data, found, ""))
    except CorruptStoreError:
        return row
