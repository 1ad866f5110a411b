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
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
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

    def subscribe(
        self,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = True,
        until_park: bool = False,
        heartbeat: float = 15.0,
        listen: Callable[[], Awaitable[None]] | None = None,
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
        listen: Callable[[], Awaitable[None]] | None = None,
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
    client gone). ``listen`` returns when the client has gone (it reads the connection):
    it is awaited while the subscriber is idle. A transport awaits ``next`` in its own
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
        listen: Callable[[], Awaitable[None]] | None,
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
                events = await hub._store.read(run_id, after=pos, until=pos + hub._page)
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
                return [End(feed.status.value, pos)]
            if feed.version != version:
                continue  # woken while we read the journal
            deadline = self._idle_since + self._heartbeat
            polling = False
            if run_id not in hub._registry:  # not driven here: its record tells
                if feed.poller is None:
                    feed.poller = self
                if feed.poller is self:
                    polling = True
                    deadline = min(deadline, self._polled_at + hub._poll)
            if await _idle(feed, deadline, self._listen):
                self._ended = True
                return None  # the client has gone
            now = anyio.current_time()
            if polling and now >= self._polled_at + hub._poll:
                self._polled_at = now
                await hub._refresh(feed)
            if now >= self._idle_since + self._heartbeat:
                self._idle_since = now
                return []
        return None


async def _idle(
    feed: RunFeed, deadline: float, listen: Callable[[], Awaitable[None]] | None
) -> bool:
    """Wait until the feed wakes or ``deadline`` passes: False; or the client goes: True."""
    scope = anyio.CancelScope(deadline=deadline)
    feed.waiters.add(scope)
    try:
        with scope:
            if listen is None:
                await anyio.sleep_forever()
            else:
                await listen()
                return True
    finally:
        feed.waiters.discard(scope)
    return False


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
