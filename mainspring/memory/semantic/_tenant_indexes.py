"""The vector indexes of one process: one per tenant, kept current from the change feed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np

import mainspring.memory.semantic._index_files as index_files

from .protocols import Change, ItemStore, Vector, VectorIndex

log = logging.getLogger(__name__)
PAGE = 4096  # changes read per store call


class TenantIndexes:
    """Per-tenant :class:`VectorIndex` es fed by :meth:`ItemStore.changes`.

    Every call into an index runs in a worker thread under one lock (an index is not
    thread-safe); :meth:`sync` reads the feed from the last change number it applied,
    so writes of other processes (PostgreSQL) reach this process's indexes too."""

    def __init__(
        self, items: ItemStore, dimensions: int, new_index: Callable[[int], VectorIndex]
    ) -> None:
        self.items = items
        self.dimensions = dimensions
        self._new_index = new_index
        self._indexes: dict[str, VectorIndex] = {}
        self._seq = 0
        self._last: tuple[str, str] | None = None  # (tenant, id) of change number _seq
        self._lock = anyio.Lock()

    async def load(self, directory: Path, identity: str) -> bool:
        """Start from a saved snapshot (see :mod:`._index_files`), if there is a good one."""
        found = await anyio.to_thread.run_sync(
            index_files.load, directory, identity, self.dimensions
        )
        if found is None or not await self._store_holds(found.seq, found.last):
            return False
        self._seq, self._last, self._indexes = found.seq, found.last, found.indexes
        return True

    async def _store_holds(self, seq: int, last: tuple[str, str] | None) -> bool:
        """Whether the store's feed holds change ``seq`` for exactly ``last``: else the
        snapshot is from the future (an older copy of the store was restored)."""
        if seq == 0:
            return True
        _, changes = await self.items.changes(seq - 1, 1)
        held = bool(changes) and changes[0].seq == seq
        if not held or last is None or (changes[0].tenant, changes[0].id) != last:
            log.warning(
                "semantic memory: the index snapshot is ahead of or apart from the store "
                "(change %d not found as saved); rebuilding the indexes from the feed",
                seq,
            )
            return False
        return True

    async def save(self, directory: Path, identity: str) -> None:
        await self.sync()
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(
                    index_files.save, directory, self._seq, self._last, identity, self._indexes
                )
            except OSError as exc:  # a snapshot saves a rebuild; not writing one loses nothing
                log.warning("semantic memory: could not save the index to %s: %s", directory, exc)

    def snapshot(self) -> tuple[int, dict[str, VectorIndex]]:
        return self._seq, self._indexes

    def size(self, tenant: str) -> int:
        index = self._indexes.get(tenant)
        return 0 if index is None else len(index)

    async def sync(self) -> None:
        async with self._lock:
            while True:
                seq, changes = await self.items.changes(self._seq, PAGE)
                if not changes:
                    return
                await anyio.to_thread.run_sync(self._apply, changes)
                self._seq, self._last = seq, (changes[-1].tenant, changes[-1].id)

    async def nearest(
        self, tenant: str, vector: Vector, k: int, among: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        index = self._indexes.get(tenant)
        if index is None:
            return []
        async with self._lock:
            return await anyio.to_thread.run_sync(lambda: index.search(vector, k, among=among))

    def _apply(self, changes: Sequence[Change]) -> None:
        # Grouped per tenant and batched: an HNSW graph inserts a batch on every core.
        latest = {(c.tenant, c.id): c for c in changes}
        for tenant in {t for t, _ in latest}:
            index = self._indexes.get(tenant)
            if index is None:
                index = self._indexes[tenant] = self._new_index(self.dimensions)
            mine = [c for (t, _), c in latest.items() if t == tenant]
            index.remove([c.id for c in mine if c.vector is None])
            blobs = [(c.id, c.vector) for c in mine if c.vector is not None]
            if blobs:
                matrix = np.frombuffer(b"".join(b for _, b in blobs), dtype="<f4")
                index.add([i for i, _ in blobs], matrix.reshape(len(blobs), self.dimensions))
