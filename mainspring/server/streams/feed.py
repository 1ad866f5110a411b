"""One run's live feed in the hub: its recent committed events, its recent tokens, its status.

A feed exists while the run has subscribers in this process. The hub fills it from the
runtime's commits (``EngineServices.committed``): only events the store has, so what a
client is sent can never be taken back by a crash (an event only recorded may be lost
and its number reused by the recovered run). Both buffers are bounded: a subscriber
holds only its position, and one that fell behind the ring reads the journal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice

import anyio

from ...events import Event, EventKind
from ...status import RunStatus


class RunFeed:
    """What the subscribers of one run share: see the module's docstring."""

    __slots__ = (
        "attached",
        "last_seq",
        "poller",
        "reading",
        "ring",
        "run_id",
        "stale",
        "status",
        "status_version",
        "subscribers",
        "token_subscribers",
        "token_total",
        "tokens",
        "version",
        "waiters",
    )

    def __init__(self, run_id: str, size: int, token_size: int) -> None:
        self.run_id = run_id
        self.ring: deque[Event] = deque(maxlen=size)  # the newest committed events, in order
        self.tokens: deque[Event] = deque(maxlen=token_size)  # the newest model_delta events
        self.token_total = 0  # tokens ever added: tokens[i] is number total - len + i + 1
        self.last_seq = 0  # the last committed seq known here
        self.status: RunStatus | None = None
        self.status_version = 0  # bumped by each status a commit reports
        self.version = 0  # bumped by each wake: a subscriber that read meanwhile looks again
        self.waiters: set[anyio.CancelScope] = set()  # the scopes of idle subscribers
        self.subscribers = 0
        self.token_subscribers = 0
        self.attached = False  # our sink is in the runtime's registry (tokens flow)
        self.poller: object | None = None  # the subscriber that reads the store's record
        self.stale = False  # the record must be read now (the fan-out may have missed some)
        self.reading: anyio.Event | None = None  # set when the read continuing the ring ends

    def wake(self) -> None:
        """Something changed: every idle subscriber looks again. An idle subscriber waits
        in a cancel scope (on its client's next message: a disconnect), not on an event:
        one object per subscriber, no task to watch its connection."""
        self.version += 1
        if self.waiters:
            for scope in self.waiters:
                scope.cancel()
            self.waiters.clear()

    # -- fed by the hub (in the run's task: no await, no raise) ---------------------------

    def committed(self, events: Sequence[Event], status: RunStatus | None) -> None:
        if events:
            ring = self.ring
            self.last_seq = max(self.last_seq, events[-1].seq)
            if ring and events[0].seq <= ring[-1].seq:  # a reader took them from the journal
                events = [e for e in events if e.seq > ring[-1].seq]
            if ring and events and events[0].seq != ring[-1].seq + 1:
                ring.clear()  # written elsewhere meanwhile: the journal fills the gap
            ring.extend(events)
        if status is not None:
            self.status = status
            self.status_version += 1
        self.wake()

    def continues(self, pos: int) -> bool:
        """Whether the journal's events after ``pos`` would continue the ring."""
        return not self.ring or self.ring[-1].seq == pos

    def backfill(self, events: Sequence[Event]) -> None:
        """Journal events a subscriber read: kept when they continue the ring (a run
        driven by another process, announced), or fill an empty one up to the run's
        known end (a quiet or parked run), so its other subscribers (a crowd) share
        them, and their encoding, rather than each reading the journal."""
        if not events:
            return
        ring = self.ring
        if ring and events[0].seq == ring[-1].seq + 1:
            ring.extend(events)  # later commits append or clear (a gap)
        elif not ring and events[-1].seq >= self.last_seq:
            ring.extend(events)

    def send_nowait(self, event: Event, /) -> None:
        """The registry's sink: a model's tokens (other live events come with commits)."""
        if event.kind is EventKind.MODEL_DELTA:
            self.tokens.append(event)
            self.token_total += 1
            self.wake()

    def close(self) -> None:
        """The registry dropped our sink (the run stopped here): re-attached on its return."""
        self.attached = False

    # -- read by subscribers -------------------------------------------------------------

    def since(self, pos: int) -> list[Event] | None:
        """The committed events after ``pos`` from the ring; None if the ring does not reach
        back to ``pos`` (read the journal)."""
        if pos >= self.last_seq:
            return []
        ring = self.ring
        if not ring or ring[0].seq > pos + 1 or ring[-1].seq <= pos:
            return None
        return list(islice(ring, pos + 1 - ring[0].seq, None))

    def tokens_at(self, pos: int, cursor: int) -> tuple[list[Event], int]:
        """The tokens to send right after event ``pos``, from token number ``cursor`` on,
        and the new cursor. Tokens of an earlier event are stale (skipped); those of a
        later one wait until the subscriber has that event; those that fell out of the
        buffer are lost to this subscriber (tokens are best effort)."""
        tokens = self.tokens
        first = self.token_total - len(tokens) + 1
        cursor = max(cursor, first - 1)
        out: list[Event] = []
        for token in islice(tokens, cursor + 1 - first, None):
            if token.seq > pos:
                break
            cursor += 1
            if token.seq == pos:
                out.append(token)
        return out, cursor

    def ended(self, pos: int, until_park: bool) -> bool:
        """Whether a subscriber at ``pos`` has had all of a run that ended (or parked)."""
        status = self.status
        if status is None or pos < self.last_seq:
            return False
        return status.terminal or (until_park and status is RunStatus.INTERRUPTED)
