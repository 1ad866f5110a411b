"""The background worker of semantic memory: embed, index, then de-duplicate or supersede.

Runs in a task group the memory owns. Jobs are taken in batches (one model call per
batch, in a worker thread); an item is judged only against older, live items of
exactly its scope, so two duplicates written together merge into the first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import anyio
import msgspec

from .items import MemoryItem, WriteResult, merged, place
from .protocols import ItemStore, Vector

if TYPE_CHECKING:
    from ._tenant_indexes import TenantIndexes
    from .resolver import Resolver


@dataclass(slots=True)
class Job:
    """An item waiting for its embedding (and, for a new item, its resolution)."""

    tenant: str
    id: str
    resolve: bool
    first: WriteResult
    done: anyio.Event = field(default_factory=anyio.Event)


class Owner(Protocol):
    """What the worker uses of the semantic memory that owns it."""

    items: ItemStore
    resolver: Resolver
    indexes: TenantIndexes
    _write_lock: anyio.Lock

    async def embed(self, texts: Sequence[str]) -> Vector: ...
    async def sync(self) -> None: ...
    def finish(self, job: Job, result: WriteResult) -> None: ...
    async def flush_touched(self) -> None: ...


log = logging.getLogger(__name__)

BATCH = 32  # items per embedding call
NEIGHBOURS = 8  # close items judged per new item
FLUSH_EVERY = 1.0  # seconds between writes of search access times


class Worker:
    def __init__(self, memory: Owner) -> None:
        self.memory = memory
        self._send, self._receive = anyio.create_memory_object_stream["Job"](math.inf)
        self._group = anyio.create_task_group()

    async def __aenter__(self) -> Worker:
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)  # the caller's error is not the group's
        self._send.close()

    def submit(self, job: Job) -> None:
        self._send.send_nowait(job)

    async def _run(self) -> None:
        while True:
            batch: list[Job] = []
            with anyio.move_on_after(FLUSH_EVERY):
                batch.append(await self._receive.receive())
            while len(batch) < BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            if batch:
                await self._process(batch)
            try:
                await self.memory.flush_touched()
            except Exception:
                log.exception("semantic memory: recording search access times failed")

    async def _process(self, batch: list[Job]) -> None:
        memory = self.memory
        results = {job.id: job.first for job in batch}
        try:
            items: dict[str, MemoryItem] = {}
            for tenant in {job.tenant for job in batch}:
                ids = [job.id for job in batch if job.tenant == tenant]
                items.update((i.id, i) for i in await memory.items.get(ids, tenant=tenant))
            todo = [job for job in batch if job.id in items]
            if todo:
                vectors = await memory.embed([items[job.id].text for job in todo])
                entries = [(j.id, items[j.id].text, v) for j, v in zip(todo, vectors, strict=True)]
                stored = set(await memory.items.set_vectors(entries))
                await memory.sync()
                for job, vector in zip(todo, vectors, strict=True):
                    if job.id not in stored:
                        continue  # changed or deleted meanwhile: a later job has it
                    if job.resolve and items[job.id].source is None:
                        results[job.id] = await self._resolve(job, items[job.id], vector)
                    elif job.first.status == "pending":
                        results[job.id] = WriteResult(job.id, "added")
        except Exception:
            # The items stay keyword-searchable; a restarted memory embeds them again.
            log.exception("semantic memory: embedding %d items failed", len(batch))
        finally:
            for job in batch:
                memory.finish(job, results[job.id])

    async def _resolve(self, job: Job, item: MemoryItem, vector: Vector) -> WriteResult:
        memory, resolver = self.memory, self.memory.resolver
        near = await memory.indexes.nearest(job.tenant, vector, NEIGHBOURS + 1)
        close = {i: s for i, s in near if i != item.id and s >= resolver.floor}
        async with memory._write_lock:
            olds = await memory.items.get(list(close), tenant=job.tenant)
            current = await memory.items.get([item.id], tenant=job.tenant)
            if not current or current[0].text != item.text:
                return job.first
            item = current[0]
            if item.superseded_by is not None:
                return job.first  # already history (a later version of its key exists)
            olds = [o for o in olds if _older_live_peer(o, item)]
            olds.sort(key=lambda o: -close[o.id])
            verdicts = [(o, await resolver.judge(item, o, close[o.id])) for o in olds]
            now = time.time()
            twin = next((o for o, v in verdicts if v == "duplicate"), None)
            if twin is not None:
                return await self._merge(job, item, twin, now)
            later = [o for o, v in verdicts if v == "supersedes"]
            if not later:
                return job.first if job.first.supersedes else WriteResult(item.id, "added")
            # Placed by validity: an old fact that starts after the new one stays current.
            placed, marked = place(item, later, now)
            rows = marked if placed is item else [*marked, placed]
            await memory.items.put(rows, [None] * len(rows))
            ids = job.first.supersedes + tuple(o.id for o in marked)
            if not marked:
                return job.first if job.first.supersedes else WriteResult(item.id, "added")
            return WriteResult(item.id, "superseded", supersedes=ids)

    async def _merge(self, job: Job, item: MemoryItem, twin: MemoryItem, now: float) -> WriteResult:
        """The new item repeats ``twin``: fold it in (metadata, times) and drop it."""
        kept = merged(twin, item, now)
        # Items the new one superseded by key now point at the item that stays.
        moved = await self.memory.items.get(list(job.first.supersedes), tenant=job.tenant)
        moved = [msgspec.structs.replace(m, superseded_by=twin.id) for m in moved]
        await self.memory.items.put([kept, *moved], [None] * (1 + len(moved)))
        await self.memory.items.delete([item.id], tenant=job.tenant)
        return WriteResult(item.id, "duplicate", duplicate_of=twin.id)


def _older_live_peer(old: MemoryItem, new: MemoryItem) -> bool:
    return (
        old.superseded_by is None
        and old.scope == new.scope
        and (old.recorded_at, old.id) < (new.recorded_at, new.id)
    )
