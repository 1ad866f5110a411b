"""The :class:`~mainspring.store.audit.Audited` half of :class:`SQLiteStore`: its chains and
anchors read on the read connections, runs deleted (with their anchors) on the writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from ._chain import Anchor, AuditSettings
from ._sqlite_audit import (
    Chain,
    select_anchors,
    select_audit_runs,
    select_chain,
    select_event_run_ids,
)
from ._sqlite_blobs import select_blobs
from ._sqlite_readers import Readers
from ._sqlite_sql import DELETE_RUNS, VACUUM_BLOBS
from ._sqlite_writer import Writer
from .audit import AuditRun, ChainRow


class SQLiteAudited:
    audit: AuditSettings
    _chain: Chain
    _readers: Readers
    _settle: Callable[[str | None], Awaitable[Writer]]

    def _on(self) -> Chain | None:
        """What the write functions hash with: None while the chain is off."""
        return self._chain if self.audit.enabled else None

    async def _read(self, run_id: str | None, query: Callable[[Any], Any]) -> Any:
        await self._settle(run_id)
        return await self._readers.run(query)

    async def audit_runs(self) -> list[AuditRun]:
        runs: list[AuditRun] = await self._read(None, select_audit_runs)
        return runs

    async def audit_event_runs(self) -> list[str]:
        ids: list[str] = await self._read(None, select_event_run_ids)
        return ids

    async def audit_chain(self, run_id: str) -> list[ChainRow]:
        rows: list[ChainRow] = await self._read(run_id, partial(select_chain, run_id))
        return rows

    async def audit_anchors(self) -> list[Anchor]:
        anchors: list[Anchor] = await self._read(None, select_anchors)
        return anchors

    async def audit_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = await self._readers.run(
            lambda conn: select_blobs(conn, list(digests))
        )
        return found

    async def vacuum_blobs(self) -> int:
        writer = await self._settle(None)
        gone: int = await writer.call(VACUUM_BLOBS, None, (), True)
        return gone

    async def delete_runs(
        self,
        run_ids: Sequence[str],
        reason: str,
        actor: str,
        details: Sequence[str],
        cutoffs: Sequence[float | None] | None = None,
    ) -> list[Anchor]:
        writer = await self._settle(None)
        limits = [None] * len(run_ids) if cutoffs is None else list(cutoffs)
        args = (list(run_ids), reason, actor, list(details), limits, self._chain)
        anchors: list[Anchor] = await writer.call(DELETE_RUNS, None, args, True)
        return anchors
