"""The stream hub: one per server process, between the runtime's commits and the clients.

The runtime tells the hub of every commit (``EngineServices.committed``: a dict lookup
for a run nobody follows). A run with subscribers has a :class:`RunFeed` holding its
newest committed events and tokens, both bounded; each subscriber (:meth:`follow`) holds
only its position. It sends from the feed's ring, or reads the journal a page at a time
when it fell behind the ring or joined late: a slow client costs no memory, and a client
that comes back after any delay resumes from the journal, no event lost or repeated.

A run not driven in this process (parked, or driven by another worker) is followed
through the runtime's event fan-out (``mainspring.fanout``): the worker that drives it
announces each commit, and the announcement wakes the run's subscribers here, which
read the journal after their position (one of them reads, the others share its page).
Announcements are not durable, so one subscriber of each such run also reads its record
from the store, every ``safety_poll`` seconds while the fan-out listens and every
``poll`` seconds while it does not (no fan-out, or its link is down); a link that comes
back makes every such run's record read at once. A parked run resumed here is followed
live again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import anyio
from starlette.types import Receive

from ...events import Event
from ...fanout import Announcement
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
    the record of a run not driven here, without a listening fan-out; ``safety_poll``:
    the same while the runtime's fan-out listens (announcements wake the run at once)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        buffer: int = 512,
        token_buffer: int = 256,
        page: int = 256,
        poll: float = 0.5,
        safety_poll: float = 1.0,
    ) -> None:
        if buffer < 1 or token_buffer < 1 or page < 1 or poll <= 0 or safety_poll <= 0:
            raise ValueError(
                "StreamHub: buffer, token_buffer and page must be >= 1, poll and safety_poll > 0"
            )
        self._services = runtime.services
        self._store = runtime.store
        self._registry = runtime.services.registry
        self._buffer, self._token_buffer, self._page, self._poll = buffer, token_buffer, page, poll
        self._safety_poll = safety_poll
        self._feeds: dict[str, RunFeed] = {}
        self.closed = False
        self.watch = WatchFeed()
        runtime.services.committed.append(self._committed)
        self._fanout = runtime.fanout
        self._unsubscribe = (
            self._fanout.subscribe(self._announced, self._resync) if self._fanout else None
        )

    def close(self) -> None:
        """Stop hearing the runtime; every stream ends at its next wake (clients reconnect)."""
        if self.closed:
            return
        self.closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
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

    # -- fed by the fan-out (other processes' commits) ------------------------------------

    @property
    def poll(self) -> float:
        """Seconds between reads of the record of a run driven elsewhere, now."""
        fanout = self._fanout
        return self._safety_poll if fanout is not None and fanout.listening else self._poll

    def _announced(self, heard: Announcement) -> None:
        """Another process committed ``heard.run_id`` up to ``heard.last_seq``: its
        subscribers read the journal up to there (ours are heard from our commits)."""
        run_id = heard.run_id
        if run_id in self._registry:
            return
        if self.watch.watchers and heard.status is not None:
            # Status changes only: each noted run costs every watcher a read of its record,
            # and a busy worker's steps would be thousands a second (their last seq comes
            # with the watchers' listing every few seconds).
            self.watch.note(run_id)
        feed = self._feeds.get(run_id)
        if feed is None or heard.last_seq < feed.last_seq:
            return  # nobody follows it here, or a late announcement of an older commit
        changed = heard.last_seq > feed.last_seq
        feed.last_seq = heard.last_seq
        if heard.status is not None and heard.status != getattr(feed.status, "value", None):
            try:
                feed.status = RunStatus(heard.status)
            except ValueError:
                log.warning("an announcement of run %s had an unknown status", run_id)
            else:
                feed.status_version += 1
                changed = True
        if changed:
            feed.wake()

    def _resync(self) -> None:
        """The fan-out (re)started or lost its link: announcements may have been missed,
        so the record of every run followed from another process is read now."""
        for feed in self._feeds.values():
            if feed.run_id not in self._registry:
                feed.stale = True
                feed.wake()

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

    async def _read(self, feed: RunFeed, pos: int) -> list[Event]:
        """The journal after ``pos``, a page. A read that would continue the ring is made
        by one subscriber at a time, the others wait and take it from the ring: a crowd
        woken by an announcement makes one read, not one each."""
        while (reading := feed.reading) is not None and feed.continues(pos):
            await reading.wait()
            if (events := feed.since(pos)) is not None:
                return events
        if not feed.continues(pos):
            return await self._store.read(feed.run_id, after=pos, until=pos + self._page)
        done = feed.reading = anyio.Event()
        try:
            events = await self._store.read(feed.run_id, after=pos, until=pos + self._page)
            feed.backfill(events)
        finally:
            feed.reading = None
            done.set()
        return events

    async def _refresh(self, feed: RunFeed) -> None:
        """Read the run's record: its committed end and status, where commits told nothing."""
        version = feed.status_version
        record = await self._store.get_run(feed.run_id)
        if record is not None:
            merge_record(feed, record, version)

    def subscribe(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = True,
        until_park: bool = False,
        heartbeat: float = 15.0,
        listen: Receive | None = None,
    ) -> Subscription:
        """A subscriber of the run from ``after`` on (see :class:`Subscription`); close it
        when done. The caller has checked that the run exists and may be read."""
        feed, new = self._join(run_id, tokens)
        return Subscription(self, feed, new, after, tokens, until_park, heartbeat, listen)

    async def follow(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = True,
        until_park: bool = False,
        heartbeat: float = 15.0,
        listen: Receive | None = None,
    ) -> AsyncGenerator[list[Item], None]:
        """:meth:`subscribe`'s batches as an async generator."""
        sub = self.subscribe(
            run_id, after=after, tokens=tokens, until_park=until_park,
            heartbeat=heartbeat, listen=listen,
        )  # fmt: skip
        try:
            while (batch := await sub.next()) is not None:
                yield batch
        finally:
            sub.close()


class Subscription:
    """One subscriber: only its position (the last seq sent, the last token number).

    :meth:`next` gives the run's committed events after the position, then live ones, in
    batches; tokens (``model_delta``) among them with ``tokens``; an empty batch after
    ``heartbeat`` idle seconds; :class:`End` last when the run ends (or parks, with
    ``until_park``); None when the stream is over (after End, the hub closed, or the
    client gone). ``listen`` is the client's connection, an ASGI ``receive`` (or
    ``websocket.receive``): awaited while the subscriber is idle, its disconnect message
    ends the stream. A transport awaits ``next`` in its own
    coroutine: an idle subscriber is that coroutine, this object and one cancel scope.
    """

    __slots__ = (
        "_cursor", "_ended", "_feed", "_fresh", "_heartbeat", "_hub", "_idle_since",
        "_listen", "_polled_at", "_pos", "_tokens", "_until_park",
    )  # fmt: skip

    def __init__(
        self,
        hub: StreamHub,
        feed: RunFeed,
        fresh: bool,
        after: int,
        tokens: bool,
        until_park: bool,
        heartbeat: float,
        listen: Receive | None,
    ) -> None:
        self._hub, self._feed, self._fresh = hub, feed, fresh
        self._pos, self._cursor = after, feed.token_total
        self._tokens, self._until_park, self._heartbeat = tokens, until_park, heartbeat
        self._listen = listen
        self._idle_since = self._polled_at = anyio.current_time()
        self._ended = False

    @property
    def position(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._feed is not None:
            self._hub._leave(self._feed, self._tokens, self)
            self._feed = None  # type: ignore[assignment]

    async def next(self) -> list[Item] | None:
        hub, feed = self._hub, self._feed
        if self._ended or feed is None:
            return None
        if self._fresh:  # the first subscriber of the run here: read where it stands
            self._fresh = False
            await hub._refresh(feed)
        run_id = feed.run_id
        while not hub.closed:
            version = feed.version  # taken before we look: no wake-up falls between
            pos = self._pos
            events = feed.since(pos)
            if events is None:
                events = await hub._read(feed, pos)
            if events:
                self._idle_since = anyio.current_time()
                if not self._tokens:
                    self._pos = events[-1].seq
                    return list(events)
                items: list[Item] = []
                cursor = self._cursor
                for event in events:
                    sent, cursor = feed.tokens_at(pos, cursor)
                    items += sent
                    items.append(event)
                    pos = event.seq
                sent, self._cursor = feed.tokens_at(pos, cursor)
                self._pos = pos
                return items + sent
            del events
            if self._tokens:
                sent, self._cursor = feed.tokens_at(pos, self._cursor)
                if sent:
                    self._idle_since = anyio.current_time()
                    return [*sent]
            if feed.ended(pos, self._until_park):
                assert feed.status is not None
                self._ended = True
                return [End(feed.status.value, feed.last_seq)]  # not a later `after`
            if feed.version != version:
                continue  # woken while we read the journal
            deadline = self._idle_since + self._heartbeat
            polling = False
            if run_id not in hub._registry:  # not driven here: its record tells
                if feed.poller is None:
                    feed.poller = self
                if feed.poller is self:
                    polling = True
                    deadline = min(deadline, -1.0 if feed.stale else self._polled_at + hub.poll)
            if await _idle(feed, deadline, self._listen):
                self._ended = True
                return None  # the client has gone
            now = anyio.current_time()
            if polling and (feed.stale or now >= self._polled_at + hub.poll):
                self._polled_at, feed.stale = now, False
                await hub._refresh(feed)
            if now >= self._idle_since + self._heartbeat:
                self._idle_since = now
                return []
        return None


async def _idle(feed: RunFeed, deadline: float, listen: Receive | None) -> bool:
    """Wait until the feed wakes or ``deadline`` passes: False; or the client goes: True."""
    scope = anyio.CancelScope(deadline=deadline)
    feed.waiters.add(scope)
    try:
        with scope:
            if listen is None:
                await anyio.sleep_forever()
            else:  # the connection itself is awaited: no closure or frame of ours per client
                while (await listen())["type"] not in _GONE:
                    pass  # a request body's rest, a client's message: nothing a stream reads
                return True
    finally:
        feed.waiters.discard(scope)
    return False


_GONE = frozenset({"http.disconnect", "websocket.disconnect"})


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
