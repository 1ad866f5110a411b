"""The stream hub: one per server process, between the runtime's commits and the clients.

The runtime tells the hub of every commit (``EngineServices.committed``: a dict lookup
for a run nobody follows). A run with subscribers has a :class:`RunFeed` holding its
newest committed events and tokens, both bounded; each subscriber (:meth:`follow`) holds
only its position. It sends from the feed's ring, or reads the journal a page at a time
when it fell behind the ring or joined late: a slow client costs no memory, and a client
that comes back after any delay resumes from the journal, no event lost or repeated.

A run not driven in this process (parked, or driven by another worker) is followed by
reading its record from the store every ``poll`` seconds, by one of its subscribers,
while it has any; a parked run resumed here is followed live again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import anyio

from ...events import Event
from ...status import RunStatus
from ...store import RunRecord
from .feed import RunFeed
from .watch import WatchFeed

if TYPE_CHECKING:
    from ...engine.runtime import Runtime

log = logging.getLogger("mainspring.server.streams")


class End(NamedTuple):
    """The last item of a stream: the run ended (or parked, with ``until=park``)."""

    status: str
    seq: int


Item = Event | End


class StreamHub:
    """See the module's docstring. ``buffer``: committed events kept per followed run;
    ``token_buffer``: tokens kept per run (a subscriber further behind skips them);
    ``page``: events read from the journal at a time; ``poll``: seconds between reads of
    the record of a run not driven here."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        buffer: int = 512,
        token_buffer: int = 256,
        page: int = 256,
        poll: float = 0.5,
    ) -> None:
        if buffer < 1 or token_buffer < 1 or page < 1 or poll <= 0:
            raise ValueError("StreamHub: buffer, token_buffer and page must be >= 1, poll > 0")
        self._services = runtime.services
        self._store = runtime.store
        self._registry = runtime.services.registry
        self._buffer, self._token_buffer, self._page, self._poll = buffer, token_buffer, page, poll
        self._feeds: dict[str, RunFeed] = {}
        self.closed = False
        self.watch = WatchFeed()
        runtime.services.committed.append(self._committed)

    def close(self) -> None:
        """Stop hearing the runtime; every stream ends at its next wake (clients reconnect)."""
        if self.closed:
            return
        self.closed = True
        if self._committed in self._services.committed:
            self._services.committed.remove(self._committed)
        for feed in list(self._feeds.values()):
            feed.wake()
        self.watch.wake()

    def feeds(self) -> int:
        """How many runs are followed now (diagnostics, leak tests)."""
        return len(self._feeds)

    def feed(self, run_id: str) -> RunFeed | None:
        return self._feeds.get(run_id)

    # -- fed by the runtime -------------------------------------------------------------

    def _committed(self, run_id: str, events: Sequence[Event], status: RunStatus | None) -> None:
        try:
            feed = self._feeds.get(run_id)
            if feed is not None:
                feed.committed(events, status)
                if feed.token_subscribers and not feed.attached:
                    self._attach(feed)  # the run is driven here again (resumed)
            if self.watch.watchers:
                self.watch.note(run_id)
        except Exception:  # a stream's fault must never reach the run's commit
            log.exception("the stream hub failed on a commit of run %s", run_id)

    def _attach(self, feed: RunFeed) -> None:
        """Take the run's tokens, if it is driven here (its model calls stream then)."""
        if self._registry.get(feed.run_id) is not None:
            self._registry.subscribers_of(feed.run_id).attach(feed, deltas=True)
            feed.attached = True

    def _detach(self, feed: RunFeed) -> None:
        subs = self._registry.subscribers(feed.run_id)
        if feed.attached and subs is not None:
            subs.remove(feed)
        feed.attached = False

    # -- subscribers ----------------------------------------------------------------------

    def _join(self, run_id: str, tokens: bool) -> tuple[RunFeed, bool]:
        feed = self._feeds.get(run_id)
        new = feed is None
        if feed is None:
            feed = self._feeds[run_id] = RunFeed(run_id, self._buffer, self._token_buffer)
        feed.subscribers += 1
        if tokens:
            feed.token_subscribers += 1
            if not feed.attached:
                self._attach(feed)
        return feed, new

    def _leave(self, feed: RunFeed, tokens: bool, me: object) -> None:
        feed.subscribers -= 1
        if tokens:
            feed.token_subscribers -= 1
            if not feed.token_subscribers:
                self._detach(feed)
        if feed.poller is me:
            feed.poller = None
            feed.wake()  # another subscriber takes the polling over
        if not feed.subscribers and self._feeds.get(feed.run_id) is feed:
            del self._feeds[feed.run_id]
            self._detach(feed)

    async def _refresh(self, feed: RunFeed) -> None:
        """Read the run's record: its committed end and status, where commits told nothing."""
        version = feed.status_version
        record = await self._store.get_run(feed.run_id)
        if record is not None:
            merge_record(feed, record, version)

    async def follow(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = True,
        until_park: bool = False,
        heartbeat: float = 15.0,
    ) -> AsyncGenerator[list[Item], None]:
        """The run's committed events after ``after``, then live ones, in batches; tokens
        (``model_delta``) among them with ``tokens``; an empty batch after ``heartbeat``
        idle seconds; :class:`End` last when the run ends (or parks, with ``until_park``).
        The caller has checked that the run exists and may be read."""
        feed, new = self._join(run_id, tokens)
        me = object()
        try:
            if new:
                await self._refresh(feed)
            pos, cursor = after, feed.token_total
            idle_since = polled_at = anyio.current_time()
            while not self.closed:
                changed = feed.changed  # taken before we look: no wake-up falls between
                events = feed.since(pos)
                if events is None:
                    events = await self._store.read(run_id, after=pos, until=pos + self._page)
                items: list[Item] = []
                if tokens:
                    for event in events:
                        sent, cursor = feed.tokens_at(pos, cursor)
                        items += sent
                        items.append(event)
                        pos = event.seq
                    sent, cursor = feed.tokens_at(pos, cursor)
                    items += sent
                elif events:
                    items = list(events)
                    pos = events[-1].seq
                if items:
                    yield items
                    idle_since = anyio.current_time()
                    continue
                if feed.ended(pos, until_park):
                    assert feed.status is not None
                    yield [End(feed.status.value, pos)]
                    return
                now = anyio.current_time()
                timeout = idle_since + heartbeat - now
                polling = False
                if run_id not in self._registry:  # not driven here: its record tells
                    if feed.poller is None:
                        feed.poller = me
                    if feed.poller is me:
                        polling = True
                        timeout = min(timeout, polled_at + self._poll - now)
                with anyio.move_on_after(max(timeout, 0.0)):
                    await changed.wait()
                now = anyio.current_time()
                if polling and now >= polled_at + self._poll:
                    polled_at = now
                    await self._refresh(feed)
                if now >= idle_since + heartbeat:
                    yield []
                    idle_since = now
        finally:
            self._leave(feed, tokens, me)


def merge_record(feed: RunFeed, record: RunRecord, version: int) -> None:
    """What a record read from the store adds to ``feed``: a later committed end, and its
    status unless a commit told a newer one while the record was read."""
    changed = False
    if record.last_seq > feed.last_seq:
        feed.last_seq = record.last_seq
        changed = True
    if feed.status_version == version and record.status is not feed.status:
        feed.status = record.status
        changed = True
    if changed:
        feed.wake()
