"""The PostgreSQL store's writes: runs created, appends of one run, group commits, and the
check that tells a write whose reply was lost from one that never committed.

Each write is one statement (``_pg_sql``) run through the retrier. A retried write that
meets a conflict looks at what is stored after the sequence it expected: if those are
its own events (same kind, ts and data), its earlier attempt committed and it succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..events import Event, encode
from ._chain import REST, RESUMED, AuditSettings, is_rest
from ._pg_audit import anchor_groups, sign
from ._pg_batch import Group
from ._pg_pool import ConnectionPool
from ._pg_retry import Retrier
from ._pg_sql import MAX_SCALAR_EVENTS, Statements, batch_args, blob_args
from ._sql_core import append_refusal
from .protocols import ObservesCommits
from .records import CommitStats, RunRecord, notify_commit

# What a write put after ``expected``: (run_id, expected, kinds, ts, data).
Written = tuple[str, int, list[str], list[float], list[str]]


class Writes:
    """The write statements of one store, run against its pool with its retrier."""

    def __init__(
        self,
        sql: Statements,
        retrier: Retrier,
        pool: Callable[[], ConnectionPool],
        observed: ObservesCommits,
        audit: AuditSettings,
    ) -> None:
        self._audit = audit
        self._sql = sql
        self._retrier = retrier
        self._pool = pool  # the open store's pool, or a StoreError if it is closed
        self._observed = observed  # whose commit_observer hears of each commit, when set

    def _notify(self, writes: int, events: int, started: float) -> None:
        """Tell the commit observer, if one is set (callers check first: it seldom is)."""
        stats = CommitStats(writes, events, time.perf_counter() - started)
        notify_commit(self._observed.commit_observer, stats)

    async def create(
        self,
        record: RunRecord,
        events: Sequence[Event],
        columns: tuple[list[str], list[float], list[str], Mapping[str, bytes]],
        hashes: list[bytes | None],
        head: bytes | None,
    ) -> RunRecord | None:
        """Insert the run and its first events; the stored record, or None if the run existed."""
        pool = self._pool()
        kinds, ts, data, blobs = columns
        metadata = encode(record.metadata, what=f"metadata of run {record.run_id!r}").decode()
        args = (
            record.run_id, record.graph, record.thread, str(record.status), record.created_at,
            record.updated_at, record.parent_run_id, str(record.durability), record.owner,
            record.lease_until, record.fence, record.error, kinds, ts, data, metadata,
            hashes, head, time.time(), self._audit.actor, record.tenant,
            *_placement(record),
        )  # fmt: skip

        async def attempt(retried: bool) -> bool:
            row = await self._signed(pool, self._sql.create_run, args, 1, record.run_id, blobs)
            created = bool(row[0])
            if created or not retried:
                return created
            # The reply to an earlier attempt may have been lost after it committed.
            return await self._is_our_run(pool, record, kinds, ts, data)

        started = time.perf_counter()
        created = await self._retrier.run(f"creating run {record.run_id!r}", attempt)
        if self._observed.commit_observer is not None:
            self._notify(1, len(events) if created else 0, started)
        if not created:
            return None
        stored = replace(record, last_seq=len(events))
        if events:
            stored.updated_at = events[-1].ts
        return stored

    async def _is_our_run(
        self,
        pool: ConnectionPool,
        record: RunRecord,
        kinds: list[str],
        ts: list[float],
        data: list[str],
    ) -> bool:
        row = await pool.fetchrow(self._sql.get_run, record.run_id)
        mine = (record.graph, record.thread, record.created_at)
        if row is None or (row["graph"], row["thread"], row["created_at"]) != mine:
            return False
        if not kinds:
            return True  # nothing else to tell two identical creations apart
        return record.run_id in await self._stored(pool, [(record.run_id, 0, kinds, ts, data)])

    async def append(
        self,
        run_id: str,
        expected: int,
        kinds: list[str],
        ts: list[float],
        data: list[str],
        status: str | None,
        error: str | None,
        fence: int | None,
        hashes: list[bytes | None],
        head: bytes | None,
        blobs: Mapping[str, bytes],
    ) -> None:
        """One run's append, now: one statement, one round trip (a signed anchor, or blobs
        written first in the same transaction: a few more)."""
        pool = self._pool()
        n = len(kinds)
        scalar = 0 < n <= MAX_SCALAR_EVENTS  # each event's fields as parameters
        # A step of a running run takes the lean statement; status changes the full one
        # (and so does an append with blobs: the lean one runs outside a transaction).
        advance = scalar and status is None and error is None and not blobs
        if advance:
            sql, args = self._sql.advance[n], [run_id, expected]
        elif scalar:
            sql, args = self._sql.append_few[n], [run_id, expected, status, error]
        else:
            sql = self._sql.append
            args = [run_id, expected, status, error, kinds, ts, data, fence, hashes]
        if scalar:
            for event in zip(kinds, ts, data, hashes, strict=True):
                args += event
            args.append(fence)
        if not advance:  # the anchor's, if the append parks or ends the run
            args += [head, time.time(), self._audit.actor]
        tag = f"INSERT 0 {n}"  # the command tag of an advance that went in

        async def write() -> tuple[bool, int | None, int | None, str | None]:
            """Did the append go in; if not, the run's last_seq (None: no such run), fence
            and owner."""
            if advance:
                if await pool.execute(sql, *args) == tag:
                    return True, expected, fence, None
                row = await pool.fetchrow(self._sql.last_seq, run_id)
                return (False, None, None, None) if row is None else (False, *row)
            row = await self._signed(pool, sql, args, 5, run_id, blobs)
            return row[0], row[1], row[2], row[3]

        async def attempt(retried: bool) -> None:
            while True:
                ok, actual, actual_fence, owner = await write()
                if ok:
                    return
                failure = append_refusal(run_id, expected, actual, fence, actual_fence, owner)
                if failure is not None:
                    break
                # A concurrent writer committed after this statement's snapshot: look again.
            if retried and run_id in await self._stored(
                pool, [(run_id, expected, kinds, ts, data)]
            ):
                return  # our earlier attempt committed; its reply was lost
            raise failure

        started = time.perf_counter()
        await self._retrier.run(f"appending to run {run_id!r}", attempt)
        if self._observed.commit_observer is not None:
            self._notify(1, n, started)

    async def _signed(
        self,
        pool: ConnectionPool,
        sql: str,
        args: Sequence[Any],
        at: int,
        run_id: str,
        blobs: Mapping[str, bytes],
    ) -> Any:
        """The row of a statement that may write an anchor (its pos and hash at ``at``):
        with a signer, the statement and the anchor's signature in one transaction, so a
        dropped connection or a crash never leaves the anchor committed unsigned (the
        retried write sees its own commit, signed, or nothing). ``blobs`` its events
        reference go in first, in the same transaction: no reference without its blob."""
        if self._audit.signer is None and not blobs:
            row = await pool.fetchrow(sql, *args)
            assert row is not None
            return row

        async def transact(conn: Any) -> Any:
            async with conn.transaction():
                if blobs:
                    await conn.execute(self._sql.put_blobs, *blob_args([(run_id, blobs)]))
                row = await conn.fetchrow(sql, *args)
                assert row is not None
                if row[0]:
                    await sign(conn, self._sql, self._audit, row[at:])
                return row

        return await pool.run(transact)

    async def write_groups(self, groups: list[Group]) -> list[BaseException | None]:
        """Write the group-commit queue's groups in one statement; one outcome per group."""
        pool = self._pool()
        outcomes: list[BaseException | None] = [None] * len(groups)
        todo = list(range(len(groups)))

        async def attempt(retried: bool) -> None:
            nonlocal todo
            while todo:
                batch = [groups[i] for i in todo]
                rows = await self._group_statement(pool, batch)
                unmatched = {r[0]: (r[1], r[4], r[5]) for r in rows if not r[2]}
                ours: set[str] = set()
                if retried and unmatched:  # an earlier attempt may have committed some
                    maybe = [g.as_write() for g in batch if g.run_id in unmatched]
                    ours = await self._stored(pool, maybe)
                again = []
                for i, group in zip(todo, batch, strict=True):
                    if group.run_id in ours:
                        outcomes[i] = None
                    elif group.run_id in unmatched:
                        actual, actual_fence, owner = unmatched[group.run_id]
                        outcome = append_refusal(
                            group.run_id, group.expected, actual, group.fence, actual_fence, owner
                        )
                        if outcome is None:
                            again.append(i)  # a concurrent writer passed this snapshot
                        outcomes[i] = outcome
                todo = again

        started = time.perf_counter()
        await self._retrier.run(f"writing a group commit of {len(groups)} runs", attempt)
        if self._observed.commit_observer is not None:
            done = [g for g, o in zip(groups, outcomes, strict=True) if o is None]
            self._notify(len(done), sum(len(g.kinds) for g in done), started)
        return outcomes

    async def _group_statement(self, pool: ConnectionPool, batch: list[Group]) -> list[Any]:
        """The group commit's statement; with the anchors of the runs it parks, ends or
        resumes, in one transaction (signed in it too)."""
        args = batch_args(batch)
        rests = [(g.run_id, g.last_seq, g.head) for g in batch if is_rest(g.status) and g.head]
        resumes = [
            (g.run_id, g.last_seq, g.head) for g in batch if g.status == "running" and g.head
        ]
        blobs = [(g.run_id, g.blobs) for g in batch if g.blobs]
        if not rests and not resumes and not blobs:
            return await pool.fetch(self._sql.append_many, *args)

        async def transact(conn: Any) -> list[Any]:
            async with conn.transaction():
                if blobs:  # before the events that reference them (a run refused keeps
                    # them until it is deleted: harmless, and the retry needs them anyway)
                    await conn.execute(self._sql.put_blobs, *blob_args(blobs))
                parked: set[str] = set()
                if resumes:  # their status before this statement: a resume leaves a rest
                    ids = [r[0] for r in resumes]
                    parked = {r[0] for r in await conn.fetch(self._sql.parked, ids)}
                rows = await conn.fetch(self._sql.append_many, *args)
                failed = {r[0] for r in rows if not r[2]}
                done = [(*r, REST) for r in rests if r[0] not in failed]
                done += [(*r, RESUMED) for r in resumes if r[0] in parked and r[0] not in failed]
                await anchor_groups(conn, self._sql, self._audit, done)
                found: list[Any] = rows
                return found

        rows: list[Any] = await pool.run(transact)
        return rows

    async def _stored(self, pool: ConnectionPool, writes: list[Written]) -> set[str]:
        """Runs whose stored events after ``expected`` are exactly these ones."""
        writes = [w for w in writes if w[2]]  # without events, nothing tells ours apart
        if not writes:
            return set()
        rows = await pool.fetch(
            self._sql.stored_events,
            [w[0] for w in writes],
            [w[1] for w in writes],
            [w[1] + len(w[2]) for w in writes],
        )
        found: dict[str, list[tuple[str, float, str]]] = {}
        for r in rows:
            found.setdefault(r[0], []).append((r[2], r[3], r[4]))
        return {
            run_id
            for run_id, _, kinds, ts, data in writes
            if found.get(run_id, []) == list(zip(kinds, ts, data, strict=True))
        }


def _placement(record: RunRecord) -> tuple[str | None, int, float | None, str | None]:
    """A new run's queue columns: queue, priority, delay from now (s), concurrency key."""
    q = record.queue
    if q is None:
        return None, 0, None, None
    delay = (
        q.delay
        if q.delay is not None
        else (None if q.available_at is None else q.available_at - record.created_at)
    )
    return q.name, q.priority, delay, q.concurrency_key
