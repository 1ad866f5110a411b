"""The PostgreSQL store's audit chain: event hashes computed as the rows are encoded, from
each run's head as this process last wrote it (read once when a run is taken over), and the
reads and deletions of ``store/audit.py``.

An anchor is written by the same statement as the append that creates, parks or ends a
run (``_pg_sql._anchor``): no extra round trip, and serialised across processes by the one
row of ``anchor_head``. Only a signature costs a statement more (the key stays here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ._chain import GENESIS, Anchor, AuditSettings, chain_rows, is_rest, still_deletable
from ._pg_schema import quote_ident
from .audit import AuditRun, ChainRow

if TYPE_CHECKING:
    from ._pg_batch import GroupCommit
    from ._pg_pool import Connection, ConnectionPool
    from ._pg_sql import Statements
    from ._pg_url import Target


class Heads:
    """Each live run's (seq, hash) as this store last wrote it, so that an append hashes its
    events without reading; a run not here (taken over, resumed) costs one read. Dropped
    when a run comes to rest, and on any failed write of it."""

    def __init__(self, audit: AuditSettings) -> None:
        self.audit = audit
        self._heads: dict[str, tuple[int, bytes]] = {}

    async def chain(
        self,
        pool: ConnectionPool,
        sql: Statements,
        run_id: str,
        expected: int,
        kinds: list[str],
        ts: list[float],
        data: list[str],
        status: str | None,
    ) -> tuple[list[bytes | None], bytes | None]:
        """The events' hashes and the run's head after them ([None...], None: chain off)."""
        if not self.audit.enabled:
            return [None] * len(kinds), None
        known = self._heads.get(run_id)
        if expected == 0:
            prev = GENESIS
        elif known is not None and known[0] == expected:
            prev = known[1]
        else:
            stored = await pool.fetchval(sql.head, run_id, expected)
            prev = GENESIS if stored is None else bytes(stored)
        rows = [
            (run_id, expected + i, kind, t, d)
            for i, (kind, t, d) in enumerate(zip(kinds, ts, data, strict=True), start=1)
        ]
        hashes: list[bytes | None] = [row[5] for row in chain_rows(prev, rows)]
        if hashes:
            prev = hashes[-1] or prev
        if is_rest(status):
            self._heads.pop(run_id, None)  # parked or ended: a resume reads it again
        else:
            self._heads[run_id] = (expected + len(kinds), prev)
        return hashes, prev

    def forget(self, run_id: str) -> None:
        self._heads.pop(run_id, None)


async def sign(conn: Any, sql: Statements, audit: AuditSettings, row: Any) -> None:
    """Store the signature of the anchor a statement returned as ``(pos, hash)``, if any:
    on the connection (and in the transaction) that wrote it, so that an anchor is never
    committed unsigned by a signing writer."""
    if audit.signer is not None and row is not None and row[0] is not None:
        await conn.execute(sql.sign, row[0], audit.signer(bytes(row[1])))


# -- reads and deletions ------------------------------------------------------------------------


async def audit_runs(pool: ConnectionPool, schema: str) -> list[AuditRun]:
    import orjson

    rows = await pool.fetch(
        f"SELECT run_id, last_seq, status, updated_at, metadata::text, tenant FROM {schema}.runs"
        " ORDER BY run_id"
    )
    return [AuditRun(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5]) for r in rows]


async def audit_event_runs(pool: ConnectionPool, schema: str) -> list[str]:
    rows = await pool.fetch(f"SELECT DISTINCT run_id FROM {schema}.events ORDER BY run_id")
    return [r[0] for r in rows]


async def audit_chain(pool: ConnectionPool, schema: str, run_id: str) -> list[ChainRow]:
    rows = await pool.fetch(
        f"SELECT seq, kind, ts, data, hash FROM {schema}.events WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    return [
        ChainRow(r[0], r[1], r[2], r[3].encode(), None if r[4] is None else bytes(r[4]))
        for r in rows
    ]


async def audit_anchors(pool: ConnectionPool, schema: str) -> list[Anchor]:
    rows = await pool.fetch(
        f"SELECT pos, run_id, seq, head, reason, at, actor, detail, hash, sig FROM {schema}.anchors"
        " ORDER BY pos"
    )
    return [
        Anchor(
            r[0],
            r[1],
            r[2],
            bytes(r[3]),
            r[4],
            r[5],
            r[6],
            r[7],
            bytes(r[8]),
            None if r[9] is None else bytes(r[9]),
        )
        for r in rows
    ]


async def delete_runs(
    conn: Connection,
    schema: str,
    sql: Statements,
    audit: AuditSettings,
    run_ids: Sequence[str],
    reason: str,
    actor: str,
    details: Sequence[str],
    cutoffs: Sequence[float | None],
) -> list[Anchor]:
    """One transaction: per run, lock its row and judge it again (still at rest, still
    older than its cutoff), anchor its last seq and head, delete it."""
    anchors: list[Anchor] = []
    async with conn.transaction():
        await _lock_blobs(conn, schema)
        for run_id, detail, cutoff in zip(run_ids, details, cutoffs, strict=True):
            found = await conn.fetchrow(
                f"SELECT last_seq, status, updated_at FROM {schema}.runs WHERE run_id = $1"
                " FOR UPDATE",
                run_id,
            )
            if found is None or not still_deletable(found[1], found[2], cutoff):
                continue
            last = found[0]
            stored = await conn.fetchval(sql.head, run_id, last) if last else None
            head = GENESIS if stored is None else bytes(stored)
            at = time.time()
            row = await conn.fetchrow(sql.anchor, run_id, last, head, reason, at, actor, detail)
            assert row is not None
            sig = None if audit.signer is None else audit.signer(bytes(row[1]))
            if sig is not None:
                await conn.execute(sql.sign, row[0], sig)
            anchors.append(
                Anchor(row[0], run_id, last, head, reason, at, actor, detail, bytes(row[1]), sig)
            )
            for table in ("events", "snapshots", "cursors", "runs"):
                await conn.execute(f"DELETE FROM {schema}.{table} WHERE run_id = $1", run_id)
            await conn.execute(_delete_run_blobs(schema), run_id)
    return anchors


async def _lock_blobs(conn: Connection, schema: str) -> None:
    """Wait for the appends writing blobs to commit, and hold new ones off, until this
    transaction ends: otherwise an append could reference a blob that was stored when it
    looked (so it wrote none) and that a deletion which did not yet see its reference
    removes. Taken first, before any run's row: appends take their run's row after it."""
    await conn.execute(f"LOCK TABLE {schema}.blobs IN SHARE ROW EXCLUSIVE MODE")


def _delete_run_blobs(schema: str) -> str:
    """Forget run $1's blob references and delete the blobs no other run references."""
    return f"""
WITH gone AS (DELETE FROM {schema}.blob_refs WHERE run_id = $1 RETURNING digest)
DELETE FROM {schema}.blobs b USING gone
WHERE b.digest = gone.digest
  AND NOT EXISTS (SELECT 1 FROM {schema}.blob_refs r WHERE r.digest = gone.digest AND r.run_id <> $1)"""


async def audit_blobs(
    pool: ConnectionPool, schema: str, digests: Sequence[str]
) -> dict[str, bytes]:
    rows = await pool.fetch(
        f"SELECT digest, data FROM {schema}.blobs WHERE digest = ANY($1::text[])", list(digests)
    )
    return {r[0]: bytes(r[1]) for r in rows}


async def vacuum_blobs(conn: Connection, schema: str) -> int:
    """References of runs that are gone, then blobs nobody references, in one transaction."""
    async with conn.transaction():
        await _lock_blobs(conn, schema)
        await conn.execute(
            f"DELETE FROM {schema}.blob_refs r"
            f" WHERE NOT EXISTS (SELECT 1 FROM {schema}.runs WHERE run_id = r.run_id)"
        )
        tag = await conn.execute(
            f"DELETE FROM {schema}.blobs b"
            f" WHERE NOT EXISTS (SELECT 1 FROM {schema}.blob_refs WHERE digest = b.digest)"
        )
    return int(tag.split()[-1])


async def anchor_groups(
    conn: Connection,
    sql: Statements,
    audit: AuditSettings,
    anchors: list[tuple[str, int, bytes, str]],
) -> list[Any]:
    """The anchors (rest, resumed) of a group commit's runs that parked, ended or were
    resumed, in its transaction and signed there."""
    rows = []
    for run_id, seq, head, reason in anchors:
        row = await conn.fetchrow(
            sql.anchor, run_id, seq, head, reason, time.time(), audit.actor, ""
        )
        await sign(conn, sql, audit, row)
        rows.append(row)
    return rows


class PostgresAudited:
    """The :class:`~mainspring.store.audit.Audited` half of :class:`PostgresStore`."""

    audit: AuditSettings
    target: Target
    _heads: Heads
    _sql: Statements
    _batch: GroupCommit
    _live_pool: Callable[[], ConnectionPool]

    @property
    def _schema_sql(self) -> str:
        return quote_ident(self.target.schema)

    async def audit_runs(self) -> list[AuditRun]:
        await self._batch.drain()
        return await audit_runs(self._live_pool(), self._schema_sql)

    async def audit_event_runs(self) -> list[str]:
        await self._batch.drain()
        return await audit_event_runs(self._live_pool(), self._schema_sql)

    async def audit_chain(self, run_id: str) -> list[ChainRow]:
        await self._batch.settle(run_id)
        return await audit_chain(self._live_pool(), self._schema_sql, run_id)

    async def audit_anchors(self) -> list[Anchor]:
        await self._batch.drain()
        return await audit_anchors(self._live_pool(), self._schema_sql)

    async def audit_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        return await audit_blobs(self._live_pool(), self._schema_sql, digests)

    async def vacuum_blobs(self) -> int:
        await self._batch.drain()
        gone: int = await self._live_pool().run(partial(vacuum_blobs, schema=self._schema_sql))
        return gone

    async def delete_runs(
        self,
        run_ids: Sequence[str],
        reason: str,
        actor: str,
        details: Sequence[str],
        cutoffs: Sequence[float | None] | None = None,
    ) -> list[Anchor]:
        await self._batch.drain()
        limits = [None] * len(run_ids) if cutoffs is None else list(cutoffs)
        for run_id in run_ids:
            self._heads.forget(run_id)
        delete = partial(
            delete_runs, schema=self._schema_sql, sql=self._sql, audit=self.audit,
            run_ids=run_ids, reason=reason, actor=actor, details=details, cutoffs=limits,
        )  # fmt: skip
        anchors: list[Anchor] = await self._live_pool().run(delete)
        return anchors
