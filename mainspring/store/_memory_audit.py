"""The memory store's audit chain, derived when it is read.

A memory store keeps events as objects and encodes nothing, and nothing outside the process
can reach it; so its hashes are computed from the events when the verifier or exporter
asks, with the same formula over the same bytes a SQLite store would have stored (the
events' JSON). Anchors are noted as runs are created and come to rest (a tuple each: W1
stays cheap) and hashed on reading; purge and erasure anchors keep the head they saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..events import Event, encode
from ._chain import (
    CREATED,
    GENESIS,
    REST,
    RESUMED,
    Anchor,
    AuditSettings,
    link,
    make_anchor,
    still_deletable,
)
from .audit import AuditRun, ChainRow
from .records import RunRecord

# (run_id, seq, head or None: derive it, reason, at, actor, detail)
_Note = tuple[str, int, bytes | None, str, float, str, str]


def _rows(run_id: str, events: Sequence[Event]) -> list[ChainRow]:
    rows = []
    prev = GENESIS
    for e in events:
        data = encode(e.data, what="event data")
        prev = link(prev, run_id, e.seq, str(e.kind), e.ts, data)
        rows.append(ChainRow(e.seq, str(e.kind), e.ts, data, prev))
    return rows


class MemoryAudit:
    """The :class:`~mainspring.store.audit.Audited` half of :class:`MemoryStore`."""

    _runs: dict[str, RunRecord]
    _events: dict[str, list[Event]]
    _snapshots: dict[str, Any]
    audit: AuditSettings
    _notes: list[_Note]

    def _note(self, run_id: str, seq: int, reason: str) -> None:
        if self.audit.enabled:
            self._notes.append((run_id, seq, None, reason, time.time(), "", ""))

    def _note_created(self, run_id: str, seq: int) -> None:
        self._note(run_id, seq, CREATED)

    def _note_rest(self, run_id: str, seq: int) -> None:
        self._note(run_id, seq, REST)

    def _note_resumed(self, run_id: str, seq: int) -> None:
        self._note(run_id, seq, RESUMED)

    async def audit_runs(self) -> list[AuditRun]:
        return [
            AuditRun(r.run_id, r.last_seq, str(r.status), r.updated_at, dict(r.metadata), r.tenant)
            for r in sorted(self._runs.values(), key=lambda r: r.run_id)
        ]

    async def audit_event_runs(self) -> list[str]:
        return sorted(run_id for run_id, events in self._events.items() if events)

    async def audit_chain(self, run_id: str) -> list[ChainRow]:
        return _rows(run_id, self._events.get(run_id, []))

    async def audit_anchors(self) -> list[Anchor]:
        heads: dict[str, list[ChainRow]] = {}
        anchors: list[Anchor] = []
        prev = GENESIS
        actor = self.audit.actor
        for pos, (run_id, seq, head, reason, at, who, detail) in enumerate(self._notes, 1):
            if head is None:
                rows = heads.get(run_id)
                if rows is None:
                    rows = heads[run_id] = await self.audit_chain(run_id)
                head = rows[seq - 1].hash if 0 < seq <= len(rows) else GENESIS
            a = make_anchor(
                prev, pos, run_id, seq, head, reason, at, who or actor, detail, self.audit.signer
            )
            anchors.append(a)
            prev = a.hash
        return anchors

    async def audit_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        return {}  # events are kept as objects, by reference: nothing is copied to split

    async def vacuum_blobs(self) -> int:
        return 0

    async def delete_runs(
        self,
        run_ids: Sequence[str],
        reason: str,
        actor: str,
        details: Sequence[str],
        cutoffs: Sequence[float | None] | None = None,
    ) -> list[Anchor]:
        done = []
        limits = [None] * len(run_ids) if cutoffs is None else cutoffs
        for run_id, detail, cutoff in zip(run_ids, details, limits, strict=True):
            record = self._runs.get(run_id)
            if record is None or not still_deletable(str(record.status), record.updated_at, cutoff):
                continue
            rows = await self.audit_chain(run_id)
            head = rows[-1].hash if rows else GENESIS
            self._notes.append((run_id, record.last_seq, head, reason, time.time(), actor, detail))
            for table in (self._runs, self._events, self._snapshots):
                table.pop(run_id, None)
            done.append(len(self._notes))
        anchors = await self.audit_anchors()
        return [anchors[pos - 1] for pos in done]
