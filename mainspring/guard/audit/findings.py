"""What ``verify`` reports: findings (tampering, with where and what kind) and notes
(what is fine but worth saying: a purge, an erasure, runs written without the chain)."""

from __future__ import annotations

from typing import Any

import msgspec

#: Kinds of finding, each a way a store was changed behind the runtime's back.
KINDS = {
    "edited": "a record's content (or its hash) was changed",
    "deleted": "records are missing from a run's sequence",
    "inserted": "a record was added that the chain did not have",
    "reordered": "a record sits at another seq than it was written at",
    "truncated": "a run's last records were deleted",
    "head_mismatch": "a run's chain at an anchored seq is not the anchored head",
    "run_deleted": "an anchored run is gone and no purge or erasure anchor says why",
    "run_unanchored": "a chained run has no anchor: its anchors were deleted, or it was added",
    "blob_missing": "a large value an event references (by its hash) was deleted",
    "blob_edited": "a large value an event references no longer has the hash it is referenced by",
    "orphan_events": "events of a run whose run row was deleted",
    "moved": "a run row's tenant or metadata is not what its run_started event recorded",
    "anchor_edited": "an anchor was changed (or the one before it, with its hash recomputed)",
    "anchor_deleted": "anchors are missing from the store's anchor chain",
    "anchor_truncated": "the anchor chain does not reach a head seen before (a witness)",
    "signature_missing": "an anchor carries no signature though a public key was given",
    "signature_invalid": "an anchor's signature does not verify with the public key",
}


class Finding(msgspec.Struct, frozen=True):
    run_id: str | None
    seq: int | None  # in the run; for anchor findings, None (see ``pos``)
    kind: str  # one of KINDS
    detail: str
    pos: int | None = None  # the anchor position, for anchor findings

    def where(self) -> str:
        parts = []
        if self.run_id is not None:
            parts.append(f"run {self.run_id}")
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        if self.pos is not None:
            parts.append(f"anchor {self.pos}")
        return ", ".join(parts) or "store"

    def __str__(self) -> str:
        return f"{self.where()}: {self.kind}: {self.detail}"


class Report(msgspec.Struct):
    findings: list[Finding]
    notes: list[str]
    runs: int = 0
    events: int = 0
    anchors: int = 0
    signed: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "anchors": self.anchors,
            "signed": self.signed,
            "findings": [msgspec.to_builtins(f) for f in self.findings],
            "notes": self.notes,
        }
