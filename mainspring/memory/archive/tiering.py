"""The tiering policy: what moves from session and semantic memory into the archive, and
back.

A move writes the archive first and deletes from the hot or warm tier after: a crash
between the two leaves a copy in both (the next run archives it again under the same id,
replacing the first copy), never a loss. The delete is conditional and atomic in the
tier (``clear_if_unchanged``, ``forget_unchanged``): a thread or item that changed since
it was archived (a message arrived, a fact was updated), even while the delete runs,
stays where it is and its archived copy is removed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
import msgspec

from ..scope import Scope
from ..semantic.items import MemoryItem
from ..session.protocol import SessionSnapshot
from .protocol import Archive, ArchiveRecord, RecordKind
from .tiers import RestoresItems, SemanticTier, SessionTier, last_activity

log = logging.getLogger("mainspring.memory.tiering")

Reason = Literal[
    "session_idle", "item_age", "item_idle", "max_items_per_scope", "superseded_after", "changed"
]


@dataclass(frozen=True)
class TieringPolicy:
    """When things move to the archive (None: that rule is off; all seconds).

    ``session_idle``: a thread not active for this long. ``item_age``: an item not
    written for this long. ``item_idle``: an item neither written nor returned by a
    search for this long. ``max_items_per_scope``: past this many items in one scope
    (tenant, user, agent), the least recently active go (superseded ones first).
    ``superseded_after``: an item superseded by a newer fact this long ago.
    """

    session_idle: float | None = None
    item_age: float | None = None
    item_idle: float | None = None
    max_items_per_scope: int | None = None
    superseded_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("session_idle", "item_age", "item_idle", "superseded_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"TieringPolicy.{name}={value}: use seconds >= 0, or None")
        if self.max_items_per_scope is not None and self.max_items_per_scope < 0:
            raise ValueError(
                f"TieringPolicy.max_items_per_scope={self.max_items_per_scope}: use >= 0 or None"
            )

    @property
    def moves_items(self) -> bool:
        return any(
            v is not None
            for v in (
                self.item_age,
                self.item_idle,
                self.max_items_per_scope,
                self.superseded_after,
            )
        )


class Moved(msgspec.Struct, frozen=True):
    """One thing tiering moved (or, in a dry run, would move); ``id`` is its archive id.
    In ``TieringReport.kept``, ``reason`` "changed": selected, then active again."""

    kind: RecordKind
    id: str
    tenant: str
    thread: str | None
    reason: Reason


class TieringReport(msgspec.Struct, frozen=True):
    started_at: float
    finished_at: float
    dry_run: bool
    moved: list[Moved]
    kept: list[Moved] = []  # selected, then changed before the delete: left in place


def session_record_id(thread: str, last_active: float) -> str:
    """One archive id per thread and activity: archiving it again after a crash replaces
    the first copy, and a thread archived, reused and archived again keeps both."""
    return f"session:{thread}@{last_active:.6f}"


class Tiering:
    """Moves what ``policy`` selects from ``session`` and ``semantic`` into ``archive``.

    ``tenants``: the tenants ``run_once(tenant=None)`` visits (neither tier lists its
    tenants); the default: the default tenant ``""`` alone. ``clock``: epoch seconds (tests pass a fake one). ``batch``: records per
    archive write.
    """

    def __init__(
        self,
        policy: TieringPolicy,
        archive: Archive,
        session: SessionTier | None = None,
        semantic: SemanticTier | None = None,
        *,
        tenants: Sequence[str] = ("",),
        clock: Callable[[], float] = time.time,
        batch: int = 256,
        keep_reports: int = 20,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch={batch}: use at least 1")
        self.policy, self.archive = policy, archive
        self.session, self.semantic = session, semantic
        if isinstance(tenants, str):
            raise TypeError(f"tenants={tenants!r}: pass a list of tenants, not one string")
        self.tenants = list(tenants)
        self.clock, self.batch = clock, batch
        self.reports: deque[TieringReport] = deque(maxlen=keep_reports)

    # -- running -------------------------------------------------------------------------

    async def run_once(self, *, tenant: str | None = None, dry_run: bool = False) -> TieringReport:
        """Select and move (``dry_run``: only select) for one tenant, or for ``tenants``."""
        started = self.clock()
        moved: list[Moved] = []
        kept: list[Moved] = []
        for one in self.tenants if tenant is None else [tenant]:
            if self.session is not None and self.policy.session_idle is not None:
                await self._sessions(one, started, dry_run, moved, kept)
            if self.semantic is not None and self.policy.moves_items:
                await self._items(one, started, dry_run, moved, kept)
        report = TieringReport(started, self.clock(), dry_run, moved, kept)
        self.reports.append(report)
        return report

    async def run_every(self, interval: float, *, tenant: str | None = None) -> None:
        """Run forever, every ``interval`` seconds, in the caller's task group
        (``tg.start_soon(tiering.run_every, 3600)``); cancel the group to stop. A failed
        round is logged and the next one runs on time."""
        if interval <= 0:
            raise ValueError(f"interval={interval}: use seconds > 0")
        while True:
            try:
                report = await self.run_once(tenant=tenant)
            except Exception:
                log.exception("tiering round failed; the next runs in %s s", interval)
            else:
                counts: dict[str, int] = defaultdict(int)
                for m in report.moved:
                    counts[m.reason] += 1
                log.info(
                    "tiering moved %d to the archive (%s), kept %d that changed",
                    len(report.moved),
                    ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing",
                    len(report.kept),
                )
            await anyio.sleep(interval)

    async def find(
        self,
        *,
        tenant: str,
        thread: str | None = None,
        kind: RecordKind | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ArchiveRecord]:
        """The archive's ``find``: records of the tenant, oldest last activity first."""
        return await self.archive.find(tenant=tenant, thread=thread, kind=kind, since=since,
                                       until=until, limit=limit, after=after)  # fmt: skip

    async def promote(self, id: str, *, tenant: str) -> ArchiveRecord:
        """Put an archived session or item back where it came from, then remove it from
        the archive (a crash between leaves it in both, never in neither)."""
        record = await self.archive.get(id, tenant=tenant)
        if record is None:
            raise LookupError(f"no archived record {id!r} for tenant {tenant!r}")
        if record.kind == "session":
            if self.session is None:
                raise ValueError(f"{id!r} is a session; give Tiering a session memory")
            await self.session.restore(msgspec.convert(record.data, SessionSnapshot))
        else:
            await self._promote_item(msgspec.convert(record.data, MemoryItem))
        await self.archive.remove([id], tenant=tenant)
        return record

    async def _promote_item(self, item: MemoryItem) -> None:
        if self.semantic is None:
            raise ValueError(f"{item.id!r} is a memory item; give Tiering a semantic memory")
        if isinstance(self.semantic, RestoresItems):  # back exactly as it was archived
            await self.semantic.restore([item])
            return
        if item.superseded_by is not None:
            # add() would run contradiction handling on it: an old fact would come back
            # as the current one and supersede the fact that replaced it.
            raise ValueError(
                f"item {item.id!r} was superseded by {item.superseded_by!r}; this semantic "
                "memory cannot restore an item as it was (no restore()), and adding it again "
                "would make it current: it stays in the archive, findable"
            )
        await self.semantic.add(
            item.text,
            scope=item.scope,
            metadata=dict(item.metadata),
            key=item.key,
            valid_from=item.valid_from,
            source=item.source,
            id=item.id,
        )

    # -- sessions ------------------------------------------------------------------------

    async def _sessions(
        self, tenant: str, now: float, dry_run: bool, moved: list[Moved], kept: list[Moved]
    ) -> None:
        assert self.session is not None and self.policy.session_idle is not None
        idle = self.policy.session_idle
        for activity in await self.session.threads(tenant=tenant, idle_for=idle):
            if now - activity.last_active < idle:
                continue
            move = Moved("session", session_record_id(activity.thread, activity.last_active),
                         activity.tenant, activity.thread, "session_idle")  # fmt: skip
            if dry_run or await self._move_session(activity.thread, activity.tenant, now):
                moved.append(move)
            else:
                kept.append(msgspec.structs.replace(move, reason="changed"))

    async def _move_session(self, thread: str, tenant: str, now: float) -> bool:
        assert self.session is not None
        snapshot = await self.session.snapshot(thread, tenant=tenant)
        record = ArchiveRecord(
            id=session_record_id(thread, snapshot.last_active),
            kind="session",
            tenant=tenant,
            thread=thread,
            time=snapshot.last_active,
            archived_at=now,
            data=msgspec.to_builtins(snapshot),
        )
        await self.archive.put([record])
        # Cleared only if not written since the snapshot, atomically in the backend.
        if not await self.session.clear_if_unchanged(
            thread, snapshot.last_active, tenant=tenant
        ):  # written to meanwhile: stays hot
            await self.archive.remove([record.id], tenant=tenant)
            return False
        return True

    # -- items ---------------------------------------------------------------------------

    async def _items(
        self, tenant: str, now: float, dry_run: bool, moved: list[Moved], kept: list[Moved]
    ) -> None:
        selected = select_items(await self._all_items(tenant), self.policy, now)
        for start in range(0, len(selected), self.batch):
            chunk = selected[start : start + self.batch]
            moves = [Moved("item", item.id, tenant, None, reason) for item, reason in chunk]
            if dry_run:
                moved.extend(moves)
                continue
            changed = await self._move_items([item for item, _ in chunk], tenant, now)
            for move in moves:
                if move.id in changed:
                    kept.append(msgspec.structs.replace(move, reason="changed"))
                else:
                    moved.append(move)

    async def _all_items(self, tenant: str) -> list[MemoryItem]:
        assert self.semantic is not None
        items: list[MemoryItem] = []
        after: str | None = None
        while True:
            page = await self.semantic.list(
                Scope(tenant=tenant), include_superseded=True, limit=500, after=after
            )
            items.extend(page)
            if len(page) < 500:
                return items
            after = page[-1].id

    async def _move_items(self, items: list[MemoryItem], tenant: str, now: float) -> set[str]:
        """Archive, then forget what did not change meanwhile; returns the ids that did."""
        assert self.semantic is not None
        records = [
            ArchiveRecord(id=item.id, kind="item", tenant=tenant, thread=None,
                          time=last_activity(item), archived_at=now,
                          data=msgspec.to_builtins(item))
            for item in items
        ]  # fmt: skip
        await self.archive.put(records)
        # Checked and deleted in one step under the memory's write lock: an update
        # acknowledged at any point before the delete keeps its item where it is.
        forgotten = set(await self.semantic.forget_unchanged(items, tenant=tenant))
        changed = {item.id for item in items} - forgotten
        if changed:  # updated or already gone: the archive keeps no stale copy of it
            await self.archive.remove(sorted(changed), tenant=tenant)
        return changed


def select_items(
    items: Sequence[MemoryItem], policy: TieringPolicy, now: float
) -> list[tuple[MemoryItem, Reason]]:
    """The items ``policy`` moves, each with the first rule that selects it."""
    selected: dict[str, tuple[MemoryItem, Reason]] = {}
    for item in items:
        reason = _item_reason(item, policy, now)
        if reason is not None:
            selected[item.id] = (item, reason)
    if policy.max_items_per_scope is not None:
        by_scope: dict[Scope, list[MemoryItem]] = defaultdict(list)
        for item in items:
            if item.id not in selected:
                by_scope[item.scope].append(item)
        for members in by_scope.values():
            # Keep the current, most recently active ones; superseded ones go first.
            members.sort(key=lambda i: (i.superseded_by is None, last_activity(i), i.id))
            excess = len(members) - policy.max_items_per_scope
            for item in members[: max(excess, 0)]:
                selected[item.id] = (item, "max_items_per_scope")
    return list(selected.values())


def _item_reason(item: MemoryItem, policy: TieringPolicy, now: float) -> Reason | None:
    written = max(item.recorded_at, item.updated_at)
    # Marking an item superseded writes it: ``updated_at`` is when memory learned better.
    if (
        policy.superseded_after is not None
        and item.superseded_by is not None
        and now - written >= policy.superseded_after
    ):
        return "superseded_after"
    if policy.item_age is not None and now - written >= policy.item_age:
        return "item_age"
    if policy.item_idle is not None and now - last_activity(item) >= policy.item_idle:
        return "item_idle"
    return None
