"""``GET /v1/watch``: the runs of a tenant as they change, for the console's live list.

The hub notes each run committed in this process, and each status change another
process announced through the event fan-out (only while someone watches); each watcher
reads the records of the runs noted since it last looked, at most every ``throttle``
seconds, and also lists the newest runs every ``poll`` seconds (the steps of runs driven
by other workers). A run is sent when its status or last seq differs from what this
watcher sent last. Reads go through the caller's view of the runtime: another tenant's
runs are never seen.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import anyio

from ...errors import RunNotFoundError
from ...store import RunRecord

if TYPE_CHECKING:
    from ..auth import Api

NOTED = 4096  # run ids kept in the change log (a watcher further behind lists the runs)
REMEMBERED = 2048  # runs a watcher remembers having sent (status, last seq)


class WatchFeed:
    """A bounded log of the runs committed here, numbered, for the watchers."""

    def __init__(self) -> None:
        self.noted: deque[str] = deque(maxlen=NOTED)
        self.total = 0
        self.watchers = 0
        self.changed = anyio.Event()

    def note(self, run_id: str) -> None:
        self.noted.append(run_id)
        self.total += 1
        if not self.changed.is_set():
            self.changed.set()

    def wake(self) -> None:
        self.changed.set()

    def since(self, cursor: int) -> tuple[list[str] | None, int]:
        """The run ids noted after ``cursor`` (None: some fell out of the log), new cursor."""
        missed = self.total - cursor
        if missed > len(self.noted):
            return None, self.total
        ids = list(dict.fromkeys(list(self.noted)[len(self.noted) - missed :]))
        return ids, self.total


async def watch_runs(
    feed: WatchFeed,
    api: Api,
    *,
    closed: Callable[[], bool] = lambda: False,
    throttle: float = 0.25,
    poll: float = 2.0,
    heartbeat: float = 15.0,
    newest: int = 50,
) -> AsyncGenerator[list[RunRecord], None]:
    """Batches of changed runs: first the ``newest`` runs, then each change (an empty batch
    after ``heartbeat`` idle seconds)."""
    sent: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def fresh(records: list[RunRecord]) -> list[RunRecord]:
        out = []
        for record in records:
            mark = (record.status.value, record.last_seq)
            if sent.get(record.run_id) != mark:
                sent[record.run_id] = mark
                sent.move_to_end(record.run_id)
                out.append(record)
        while len(sent) > REMEMBERED:
            sent.popitem(last=False)
        return out

    feed.watchers += 1
    try:
        cursor = feed.total
        first = fresh(await api.list_runs(limit=newest))
        yield first
        listed_at = idle_since = anyio.current_time()
        while True:
            now = anyio.current_time()
            wait = min(listed_at + poll, idle_since + heartbeat) - now
            if feed.total == cursor:
                if feed.changed.is_set():
                    feed.changed = anyio.Event()
                with anyio.move_on_after(max(wait, 0.0)):
                    await feed.changed.wait()
            if closed():
                return
            await anyio.sleep(throttle)  # changes that come together are read together
            ids, cursor = feed.since(cursor)
            now = anyio.current_time()
            records: list[RunRecord] = []
            if ids is None or now >= listed_at + poll:
                records += await api.list_runs(limit=newest)
                listed_at = now
            for run_id in ids or ():
                try:
                    records.append(await api.get_run(run_id))
                except RunNotFoundError:
                    continue  # another tenant's run (or gone): not this watcher's
            batch = fresh(records)
            if batch:
                yield batch
                idle_since = anyio.current_time()
            elif now >= idle_since + heartbeat:
                yield []
                idle_since = now
    finally:
        feed.watchers -= 1
