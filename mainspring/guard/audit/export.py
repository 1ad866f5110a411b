"""``export``: a store's chains and anchors as JSON lines, for an auditor or an archive.

One object per line: each event ``{"type": "event", "run_id", "seq", "kind", "ts",
"data", "hash", "prev"}`` (hashes in hex; ``data`` as stored, after the gate's
redaction: large strings as references ``{"$blob": "sha256:<hex>", "bytes": n}``, listed
in ``data["$refs"]``; see ``store/_blobs.py``); each blob once, just before the first
event that references it, as ``{"type": "blob", "digest", "bytes", "data"}`` (``data``
the string); then each anchor ``{"type": "anchor", "pos", "run_id", "seq", "head",
"reason", "at", "actor", "detail", "hash", "prev", "sig"}``. ``redact`` (a callable
taking and returning one record dict) is applied to every record before it is written:
the hook for a PII redactor. Hashes are over the stored bytes, so a redacted export
says what was there without showing it; an unredacted one can be re-hashed (events as
they are, blobs by the SHA-256 of their UTF-8 ``data``), and a reader puts each blob
back where its reference is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from ...events import decode
from ...store._chain import GENESIS
from .blobs import new_blobs
from .verify import audited

Redactor = Callable[[dict[str, Any]], dict[str, Any]]

_hex = bytes.hex


async def records(
    store: object, *, run: str | None = None, redact: Redactor | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The export's records, in order: each run's events by seq, then the anchors."""
    s = audited(store)
    ids = (
        [run]
        if run is not None
        else sorted({r.run_id for r in await s.audit_runs()} | set(await s.audit_event_runs()))
    )
    exported: set[str] = set()  # digests of the blobs written so far
    for run_id in ids:
        prev = GENESIS
        for row in await s.audit_chain(run_id):
            for digest, raw in (await new_blobs(s, [row], exported)).items():
                blob = {
                    "type": "blob",
                    "digest": digest,
                    "bytes": len(raw),
                    "data": raw.decode("utf-8", "surrogatepass"),
                }
                yield blob if redact is None else redact(blob)
            record = {
                "type": "event",
                "run_id": run_id,
                "seq": row.seq,
                "kind": row.kind,
                "ts": row.ts,
                "data": decode(row.data),
                "hash": None if row.hash is None else _hex(row.hash),
                "prev": _hex(prev),
            }
            prev = row.hash or GENESIS
            yield record if redact is None else redact(record)
    prev = GENESIS
    for a in await s.audit_anchors():
        if run is None or a.run_id == run:
            record = {
                "type": "anchor",
                "pos": a.pos,
                "run_id": a.run_id,
                "seq": a.seq,
                "head": _hex(a.head),
                "reason": a.reason,
                "at": a.at,
                "actor": a.actor,
                "detail": decode(a.detail) if a.detail else None,
                "hash": _hex(a.hash),
                "prev": _hex(prev),
                "sig": None if a.sig is None else _hex(a.sig),
            }
            yield record if redact is None else redact(record)
        prev = a.hash


_ENCODER = msgspec.json.Encoder()


async def export_lines(
    store: object, *, run: str | None = None, redact: Redactor | None = None
) -> AsyncIterator[bytes]:
    """The export as JSON lines (bytes, each ending in a newline)."""
    async for record in records(store, run=run, redact=redact):
        yield _ENCODER.encode(record) + b"\n"
