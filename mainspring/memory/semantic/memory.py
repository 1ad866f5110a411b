"""SemanticMemory: the one implementation of semantic (warm) memory's logic.

Writes do not wait for a model. :meth:`SemanticMemory.add` stores the row (keyword
search sees it at once) and answers ``pending``, or at once ``duplicate`` (the same
normalised text in the same scope) or ``superseded`` (the same ``key`` in the same
scope). A background worker, in a task group the memory owns, embeds new items in
batches in a worker thread, adds them to the vector index, then asks the
:class:`~.resolver.Resolver` about close, older, live items of the same scope: a
duplicate is merged into the old item; an update marks the old item superseded
(``superseded_by`` and ``valid_to`` set, the row kept). ``await settle(id)`` gives the
final :class:`~.items.WriteResult`; ``search(fresh=True)`` (the default) first waits
for the tenant's pending embeddings, so a write is visible to search once its call
has returned.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import anyio
import anyio.to_thread
import msgspec
import numpy as np

import mainspring.memory.semantic._checks as check

from ...errors import StoreError
from ...models.protocol import EmbeddingProvider
from ..scope import Scope
from ._tenant_indexes import TenantIndexes
from ._worker import Job, Worker
from .index import default_index
from .items import (
    Hit,
    MemoryItem,
    NewItem,
    Source,
    WriteResult,
    merged,
    place,
    starts,
    text_digest,
)
from .protocols import ItemStore, Selection, Vector, VectorIndex
from .ranking import fuse
from .resolver import Resolver, SimilarityResolver
from .sqlite import SQLiteItemStore
from .stores import open_item_store

log = logging.getLogger(__name__)

#: Measured on tests/data/fact_pairs.json (benchmarks/semantic_resolver_eval.py).
DEFAULT_DEDUPE = 0.85
DEFAULT_SUPERSEDE = 0.72
ANN_ROUNDS = 2  # over-fetch rounds before a filtered search may take the exact path
ANN_FETCH_LIMIT = 1000  # neighbours a filter is projected to need before it does
SELECTIVE_UP_TO = 2000  # a narrower selection is searched exactly over its own ids
Mode = Literal["hybrid", "vector", "keyword"]
ANY_SCOPE = Scope()  # the default tenant "", any user, any agent


class SemanticMemory:
    """Semantic memory on an :class:`~.protocols.ItemStore`; an async context manager.

    ``index`` makes one :class:`~.protocols.VectorIndex` per tenant from the model's
    dimensions (default: exact, then HNSW above 10k vectors). ``dedupe`` and
    ``supersede`` are the cosine thresholds of the default resolver (``supersede=None``:
    no contradiction handling); ``resolver`` replaces it (e.g. a model-based judge).
    ``index_dir``: where to keep a snapshot of the indexes between runs (for a store
    with an ``identity``; :meth:`open` puts it beside a SQLite file). The memory owns
    ``items`` and closes it on exit.
    """

    def __init__(
        self,
        items: ItemStore,
        *,
        embeddings: EmbeddingProvider | None = None,
        index: Callable[[int], VectorIndex] | None = None,
        dedupe: float = DEFAULT_DEDUPE,
        supersede: float | None = DEFAULT_SUPERSEDE,
        resolver: Resolver | None = None,
        index_dir: str | Path | None = None,
    ) -> None:
        if embeddings is None:
            from ...models.embeddings_local import LocalEmbeddings

            embeddings = LocalEmbeddings()
        self.items = items
        self.embeddings = embeddings
        self.resolver = resolver or SimilarityResolver(dedupe, supersede)
        self._new_index = index or default_index
        self.index_dir = None if index_dir is None else Path(index_dir)
        self._jobs: dict[str, Job] = {}
        self._results: OrderedDict[str, WriteResult] = OrderedDict()
        self._touched: dict[str, set[str]] = {}
        self._worker: Worker | None = None
        self._closed = False  # its item store is closed for good

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str = ":memory:", **options: Any) -> AsyncIterator[SemanticMemory]:
        """``async with SemanticMemory.open(url) as memory``: ``"sqlite:///path"``, a
        path, ``":memory:"`` (embedded), or ``"postgresql://..."`` (shared)."""
        store = await open_item_store(url)
        if isinstance(store, SQLiteItemStore) and store.path != ":memory:":
            options.setdefault("index_dir", f"{store.path}.index")
        try:
            memory = cls(store, **options)
        except BaseException:
            await store.aclose()
            raise
        async with memory:
            yield memory

    async def __aenter__(self) -> SemanticMemory:
        if self._closed:
            raise StoreError(
                "this SemanticMemory was closed (with its item store) and cannot be opened "
                "again: open a new one, or give Memory(semantic=URL) so that every runtime "
                "using the memory opens its own"
            )
        try:
            await self.items.bind_model(self.embeddings.name, self.embeddings.dimensions)
            self.indexes = TenantIndexes(self.items, self.embeddings.dimensions, self._new_index)
            self._write_lock = anyio.Lock()
            await self._load_indexes()
            await self.sync()
            self._worker = Worker(self)
            await self._worker.__aenter__()
        except BaseException:
            await self.items.aclose()
            raise
        for item in await self.items.unembedded(100_000):  # left by a stopped process
            self._enqueue(item.scope.tenant, item.id, True, WriteResult(item.id, "pending"))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._worker is not None:
                if kind is None:
                    await self.settle()
                await self._worker.__aexit__(kind, exc, tb)
                await self.flush_touched()
                await self._save_indexes()
        finally:
            self._worker = None
            self._closed = True
            await self.items.aclose()

    async def aclose(self) -> None:
        await self.__aexit__(None, None, None)

    @property
    def is_open(self) -> bool:
        """Entered and not yet closed (its background worker runs)."""
        return self._worker is not None

    # -- writes ---------------------------------------------------------------------

    async def add(
        self,
        text: str,
        *,
        scope: Scope = ANY_SCOPE,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
        valid_from: float | None = None,
        source: Source | None = None,
        id: str | None = None,
    ) -> WriteResult:
        """Remember ``text``: stored and keyword-searchable when this returns."""
        entry = NewItem(text, dict(metadata) if metadata else None, key, valid_from, source, id)
        return (await self.add_many([entry], scope=scope))[0]

    async def add_many(
        self, entries: Iterable[str | NewItem], *, scope: Scope = ANY_SCOPE
    ) -> builtins.list[WriteResult]:
        """Remember many texts (or :class:`NewItem`) in one scope, in one store write.

        An explicit ``id`` that exists in the tenant under this same scope replaces that
        item (an update: new text, metadata and key; its ``recorded_at`` is kept); under
        another scope (another user or agent) it is refused with a ValueError. Entries
        with the same ``key`` in one call are versions in order: the later supersedes."""
        self._check_open()
        scope = check.scope(scope)
        now = time.time()
        fresh = [check.new_item(e, scope, now) for e in entries]
        results: builtins.list[WriteResult] = []
        writes: dict[str, tuple[MemoryItem, Vector | None]] = {}
        async with self._write_lock:
            fresh = await self._claim_ids(fresh, scope)
            seen: dict[str, str] = {}  # digest -> id, within this call
            versions: dict[str, dict[str, MemoryItem]] = {}  # key -> open versions by id
            for item in fresh:
                digest = text_digest(item.text)
                twin = seen.get(digest)
                olds = [] if twin else await self.items.same(scope, digest=digest)
                olds = [o for o in olds if o.id != item.id]
                if twin or olds:
                    target = twin or olds[0].id
                    if olds:
                        writes[olds[0].id] = (merged(olds[0], item, now), None)
                    results.append(WriteResult(item.id, "duplicate", duplicate_of=target))
                    continue
                seen[digest] = item.id
                replaced: builtins.list[MemoryItem] = []
                if item.key:
                    if item.key not in versions:
                        stored = await self.items.same(scope, key=item.key, open_at=starts(item))
                        versions[item.key] = {v.id: v for v in stored}
                    mine = versions[item.key]
                    item, replaced = place(item, [*mine.values()], now)
                    for version in (*replaced, item):
                        mine[version.id] = version
                        writes[version.id] = (version, None)
                writes[item.id] = (item, None)
                ids = tuple(o.id for o in replaced)
                results.append(WriteResult(item.id, "superseded" if ids else "pending", None, ids))
            await self.items.put([w[0] for w in writes.values()], [w[1] for w in writes.values()])
        for result in results:
            if result.status != "duplicate":
                self._enqueue(scope.tenant, result.id, True, result)
            else:
                self._remember(result)
        return results

    async def _claim_ids(
        self, fresh: builtins.list[MemoryItem], scope: Scope
    ) -> builtins.list[MemoryItem]:
        """Items with explicit ids, checked against what the tenant holds: another
        scope's item is refused, this scope's is replaced (keeping its ``recorded_at``)."""
        existing = {
            i.id: i for i in await self.items.get([i.id for i in fresh], tenant=scope.tenant)
        }
        out = []
        for item in fresh:
            old = existing.get(item.id)
            if old is not None and old.scope != scope:
                raise ValueError(
                    f"memory item id {item.id!r} already exists in tenant {scope.tenant!r} and "
                    f"belongs to another scope (user {old.scope.user!r}, agent "
                    f"{old.scope.agent!r}); choose another id, or write in that scope"
                )
            if old is not None:
                item = msgspec.structs.replace(item, recorded_at=old.recorded_at)
            out.append(item)
        return out

    async def restore(self, items: Sequence[MemoryItem]) -> None:
        """Put items back (ids, ``recorded_at``, validity, ``superseded_by`` as they
        were), with no de-duplication or contradiction check: what promotion from the
        archive uses. A restore counts as a write of the item: ``updated_at`` and
        ``accessed_at`` become now (so an age-based tiering rule does not demote a
        promoted item again at once). They are keyword-searchable at once and embedded
        again off the caller's path."""
        now = time.time()
        restored = [
            msgspec.structs.replace(i, indexed=False, updated_at=now, accessed_at=now)
            for i in items
        ]
        for item in restored:
            check.scope(item.scope)
            check.text(item.text)
        async with self._write_lock:
            await self.items.put(restored, [None] * len(restored))
        for item in restored:
            self._enqueue(item.scope.tenant, item.id, False, WriteResult(item.id, "pending"))

    async def update(
        self,
        id: str,
        *,
        tenant: str = "",
        text: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        valid_to: float | None = None,
    ) -> MemoryItem:
        """Change an item's text (embedded again, off the caller's path), replace its
        metadata, or close its validity (``valid_to``)."""
        self._check_open()
        if text is not None:
            check.text(text)
        new_metadata = None if metadata is None else check.metadata(metadata)
        end = check.time_or_none(valid_to, "valid_to")
        async with self._write_lock:
            item = await self.get(id, tenant=tenant)
            if item is None:
                raise KeyError(f"no memory item {id!r} in tenant {tenant!r}")
            changed = msgspec.structs.replace(
                item,
                text=item.text if text is None else text,
                metadata=item.metadata if new_metadata is None else new_metadata,
                valid_to=item.valid_to if end is None else end,
                updated_at=time.time(),
            )
            await self.items.put([changed], [None])
        if changed.text != item.text:
            self._enqueue(tenant, id, False, WriteResult(id, "pending"))
            await self.sync()  # the old vector leaves the index now
            changed = msgspec.structs.replace(changed, indexed=False)
        return changed

    async def forget(self, ids: str | Sequence[str], *, tenant: str = "") -> int:
        """Delete items for good; how many there were."""
        self._check_open()
        ids = [ids] if isinstance(ids, str) else builtins.list(ids)
        async with self._write_lock:
            count = await self.items.delete(ids, tenant=check.tenant(tenant))
        await self.sync()
        return count

    async def forget_unchanged(
        self, items: Sequence[MemoryItem], *, tenant: str = ""
    ) -> builtins.list[str]:
        """Delete each item only if it is still as given (same ``updated_at``), checked
        and deleted under the write lock, so an update acknowledged before or during
        this call is never lost; the ids deleted (what tiering archived and may drop)."""
        self._check_open()
        tenant = check.tenant(tenant)
        async with self._write_lock:
            stored = await self.items.get([i.id for i in items], tenant=tenant)
            written = {s.id: s.updated_at for s in stored}
            ids = [i.id for i in items if i.id in written and written[i.id] == i.updated_at]
            if ids:
                await self.items.delete(ids, tenant=tenant)
        if ids:
            await self.sync()
        return ids

    # -- reads ----------------------------------------------------------------------

    async def get(self, id: str, *, tenant: str = "") -> MemoryItem | None:
        found = await self.items.get([id], tenant=check.tenant(tenant))
        return found[0] if found else None

    async def list(
        self,
        scope: Scope = ANY_SCOPE,
        *,
        filters: Mapping[str, Any] | None = None,
        include_superseded: bool = False,
        as_of: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> builtins.list[MemoryItem]:
        """Items of a scope in id order (oldest first); page on with ``after=`` the last id."""
        selection = check.selection(scope, filters, as_of, include_superseded)
        return await self.items.list(selection, limit=check.limit(limit), after=after)

    async def search(
        self,
        query: str,
        *,
        scope: Scope = ANY_SCOPE,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
        mode: Mode = "hybrid",
        as_of: float | None = None,
        include_superseded: bool = False,
        fresh: bool = True,
    ) -> builtins.list[Hit]:
        """The best items for ``query``: vector, keyword, or both fused (RRF).

        ``as_of=t``: items valid at ``t``, superseded ones included. ``fresh=False``
        does not wait for pending embeddings (they are found by keyword only)."""
        self._check_open()
        check.text(query, "query")
        limit, mode = check.limit(limit), check.mode(mode)  # type: ignore[assignment]
        selection = check.selection(scope, filters, as_of, include_superseded)
        tenant = selection.scope.tenant
        if fresh:
            await self.settle_tenant(tenant)
            await self.sync()
        wanted = limit if mode != "hybrid" else max(2 * limit, 20)
        found: dict[str, MemoryItem] = {}
        vector: builtins.list[tuple[str, float]] = []
        keyword: builtins.list[tuple[str, float]] = []
        if mode != "keyword":
            vector = await self._vector_search(query, selection, wanted, found)
        if mode != "vector":
            keyword = await self.items.keyword(query, selection, limit=wanted)
        ranked = fuse(vector, keyword)[:limit]
        missing = [f.id for f in ranked if f.id not in found]
        found.update((i.id, i) for i in await self.items.get(missing, tenant=tenant))
        hits = [
            Hit(found[f.id], _score(f, mode), vector=f.vector, keyword=f.keyword)
            for f in ranked
            if f.id in found
        ]
        self._touched.setdefault(tenant, set()).update(h.item.id for h in hits)
        return hits

    @overload
    async def settle(self) -> None: ...
    @overload
    async def settle(self, id: str) -> WriteResult: ...

    async def settle(self, id: str | None = None) -> WriteResult | None:
        """Wait for background work: of one write (its final result), or of all."""
        if id is None:
            while self._jobs:
                await next(iter(self._jobs.values())).done.wait()
            return None
        job = self._jobs.get(id)
        if job is not None:
            await job.done.wait()
        result = self._results.get(id)
        if result is None:
            raise KeyError(f"no write {id!r} is known to this memory (it keeps the last 10000)")
        return result

    async def settle_tenant(self, tenant: str) -> None:
        for job in [j for j in self._jobs.values() if j.tenant == tenant]:
            await job.done.wait()

    # -- the index ------------------------------------------------------------------

    async def sync(self) -> None:
        """Bring this process's vector indexes up to the item store's change feed."""
        await self.indexes.sync()

    async def _load_indexes(self) -> None:
        identity = getattr(self.items, "identity", "")
        if self.index_dir is not None and identity:
            await self.indexes.load(self.index_dir, identity)

    async def _save_indexes(self) -> None:
        identity = getattr(self.items, "identity", "")
        if self.index_dir is not None and identity:
            await self.indexes.save(self.index_dir, identity)

    async def embed(self, texts: Sequence[str]) -> Vector:
        provider: Any = self.embeddings
        if hasattr(provider, "embed_array"):  # LocalEmbeddings: one array, no lists
            out: Vector = await anyio.to_thread.run_sync(provider.embed_array, texts)
            return out
        array = np.asarray(await provider.embed(texts), dtype=np.float32)
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        return array / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]

    async def _vector_search(
        self, query: str, selection: Selection, k: int, found: dict[str, MemoryItem]
    ) -> builtins.list[tuple[str, float]]:
        """The ``k`` nearest items the selection admits (measured: see the docs).

        Over-fetch from the ANN index and filter, 4x more each round while short. From
        the second round on, the share admitted so far projects how many neighbours the
        filter needs; past ``ANN_FETCH_LIMIT`` the selection is selective, and scoring
        exactly among the ids the store admits (when at most ``SELECTIVE_UP_TO``) beats
        fetching ever more neighbours."""
        tenant = selection.scope.tenant
        size = self.indexes.size(tenant)
        if not size:
            return []
        vector = (await self.embed([query]))[0]
        fetch, rounds, projected, tried_exact = max(4 * k, 40), 0, float("inf"), False
        while True:
            if rounds >= ANN_ROUNDS and projected > ANN_FETCH_LIMIT and not tried_exact:
                tried_exact = True
                ids = await self.items.ids(selection, limit=SELECTIVE_UP_TO + 1)
                if len(ids) <= SELECTIVE_UP_TO:
                    return await self.indexes.nearest(tenant, vector, k, among=ids)
            near = await self.indexes.nearest(tenant, vector, fetch)
            todo = [i for i, _ in near if i not in found]
            found.update((i.id, i) for i in await self.items.get(todo, tenant=tenant))
            admitted = [(i, s) for i, s in near if i in found and selection.admits(found[i])]
            if len(admitted) >= k or fetch >= size:
                return admitted[:k]
            rounds += 1
            projected = fetch * k / max(len(admitted), 0.5)
            fetch *= 4

    # -- background bookkeeping -------------------------------------------------------

    def _check_open(self) -> None:
        if self._worker is None:
            raise StoreError(
                "semantic memory is not open: use it inside `async with SemanticMemory(...)` "
                "or `async with SemanticMemory.open(url)`"
            )

    def _enqueue(self, tenant: str, id: str, resolve: bool, first: WriteResult) -> None:
        self._check_open()
        assert self._worker is not None
        old = self._jobs.get(id)
        job = Job(tenant, id, resolve and (old is None or old.resolve), first)
        self._jobs[id] = job
        self._worker.submit(job)
        if old is not None:  # superseded by this job: whoever waits on it waits on this
            self._remember(first)

    def finish(self, job: Job, result: WriteResult) -> None:
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]
        self._remember(result)
        job.done.set()

    def _remember(self, result: WriteResult) -> None:
        self._results[result.id] = result
        self._results.move_to_end(result.id)
        while len(self._results) > 10_000:
            self._results.popitem(last=False)

    async def flush_touched(self) -> None:
        touched, self._touched = self._touched, {}
        now = time.time()
        for tenant, ids in touched.items():
            await self.items.touch(sorted(ids), tenant=tenant, at=now)


def _score(f: Any, mode: str) -> float:
    if mode == "vector":
        return float(f.vector)
    if mode == "keyword":
        return float(f.keyword)
    return float(f.score)
