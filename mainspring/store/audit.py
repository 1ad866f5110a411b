"""What a store offers the audit trail (``mainspring.guard.audit``): its chains as stored,
and deleting whole runs with an anchor written first.

Every backend implements :class:`Audited`; the verifier and the exporter read only
through it, so they judge what the database holds, not what a process remembers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ._chain import Anchor, AuditSettings


class ChainRow(NamedTuple):
    """One stored event, as the chain covers it."""

    seq: int
    kind: str
    ts: float
    data: bytes  # the event's JSON object exactly as stored (large strings as blob refs)
    hash: bytes | None  # None: written before the chain existed, or with it off


class AuditRun(NamedTuple):
    """A run's summary row, as far as the audit trail cares."""

    run_id: str
    last_seq: int
    status: str
    updated_at: float
    metadata: dict[str, Any]
    tenant: str = ""  # the tenant column ("" the default tenant): what queries scope by


@runtime_checkable
class Audited(Protocol):
    """A store whose journals are hash-chained and anchored."""

    audit: AuditSettings

    async def audit_runs(self) -> list[AuditRun]:
        """Every run's summary row, by run id."""

    async def audit_event_runs(self) -> list[str]:
        """The ids of runs that have events (with or without a summary row)."""

    async def audit_chain(self, run_id: str) -> list[ChainRow]:
        """The run's events as stored, by seq."""

    async def audit_anchors(self) -> list[Anchor]:
        """The store's anchor chain, by position."""

    async def audit_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """The stored bytes of the blobs ``digests`` name (``store/_blobs.py``), as stored:
        those missing are left out, none is checked against its digest."""

    async def vacuum_blobs(self) -> int:
        """Delete the blobs no run references any more; how many. Deleting runs deletes
        their own: this sweeps what was left by hand edits or writes refused midway."""

    async def delete_runs(
        self,
        run_ids: Sequence[str],
        reason: str,
        actor: str,
        details: Sequence[str],
        cutoffs: Sequence[float | None] | None = None,
    ) -> list[Anchor]:
        """Delete whole runs (events, snapshot, cursors, row), each after an anchor with
        its last seq and head, ``reason`` (purged, erased), ``actor`` and its detail (JSON
        text), in one transaction. Each run's row is judged again under the transaction's
        lock: runs not found, running (resumed since the caller listed them) or, with
        ``cutoffs``, changed at or after their cutoff are skipped. The anchors written."""
