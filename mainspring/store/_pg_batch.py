"""Group commit: appends from many runs gathered for a moment and written as one statement.

``batch`` and ``off`` appends are queued here. One writer task (the store's own)
waits up to ``window`` seconds after the first queued write, then
hands everything queued to the store as groups, one per run, to be written in
one statement. A run whose expected sequence does not match fails alone; the
others commit. While a statement is in flight, new writes queue up and go in
the next one, so under load the batch size follows the commit latency.

Writes to one run stay in order: consecutive writes that chain (each one's
``expected`` is the previous one's last seq) are merged into one group; a write
that does not chain waits for the next statement. ``off`` writes have no
waiter, so their failures are kept here until the run's next append or a flush.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio

from ..errors import ConflictError, StoreError


@dataclass(slots=True, eq=False)
class Write:
    """One accepted append, encoded and waiting for the writer."""

    run_id: str
    expected: int
    kinds: list[str]
    ts: list[float]
    data: list[str]
    hashes: list[bytes | None]  # the audit chain's, one per event (None: the chain is off)
    head: bytes | None  # the run's hash after this write (None: the chain is off)
    status: str | None
    error: str | None
    fence: int | None
    confirm: bool  # False for durability 'off': nobody waits for the outcome
    blobs: Mapping[str, bytes]  # the large strings its events reference (_blobs.py)
    done: anyio.Event = field(default_factory=anyio.Event)
    exc: BaseException | None = None


@dataclass(slots=True, eq=False)
class Group:
    """Consecutive writes to one run, written as one append."""

    writes: list[Write]
    run_id: str
    expected: int
    kinds: list[str]
    ts: list[float]
    data: list[str]
    hashes: list[bytes | None]
    head: bytes | None
    status: str | None
    error: str | None
    fence: int | None
    blobs: Mapping[str, bytes]

    @classmethod
    def of(cls, w: Write) -> Group:
        # Shares the write's lists: add() builds new ones rather than extend them.
        return cls(
            [w], w.run_id, w.expected, w.kinds, w.ts, w.data, w.hashes, w.head, w.status,
            w.error, w.fence, w.blobs,
        )  # fmt: skip

    def as_write(self) -> tuple[str, int, list[str], list[float], list[str]]:
        return self.run_id, self.expected, self.kinds, self.ts, self.data

    @property
    def last_seq(self) -> int:
        return self.expected + len(self.kinds)

    def add(self, w: Write) -> None:
        self.writes.append(w)
        self.kinds = self.kinds + w.kinds
        self.ts = self.ts + w.ts
        self.data = self.data + w.data
        self.hashes = self.hashes + w.hashes
        self.head = w.head
        self.status = w.status if w.status is not None else self.status
        self.error = w.error if w.error is not None else self.error
        if w.blobs:
            self.blobs = {**self.blobs, **w.blobs}


# Writes the groups; returns one outcome per group (None: committed).
WriteGroups = Callable[[list[Group]], Awaitable[list[BaseException | None]]]


class GroupCommit:
    def __init__(self, write: WriteGroups, window: float, max_events: int = 20_000) -> None:
        self._write = write
        self._window = window
        self._max_events = max_events
        self._queue: list[Write] = []
        self._tails: dict[str, Write] = {}  # each run's last accepted write
        self._failures: dict[str, BaseException] = {}  # unreported 'off' failures by run
        self._wake = anyio.Event()
        self._closed = False

    def submit(self, w: Write) -> None:
        if self._closed:
            raise StoreError("the PostgreSQL store is closed; open it again before use")
        self._queue.append(w)
        self._tails[w.run_id] = w
        self._wake.set()

    async def settle(self, run_id: str) -> None:
        """Wait until every accepted write to ``run_id`` is committed or failed."""
        tail = self._tails.get(run_id)
        if tail is not None:
            await tail.done.wait()

    async def drain(self) -> None:
        """Wait until every write accepted so far is committed or failed."""
        for tail in list(self._tails.values()):
            await tail.done.wait()

    def pop_failure(self, run_id: str) -> BaseException | None:
        return self._failures.pop(run_id, None)

    def pop_any_failure(self) -> BaseException | None:
        if not self._failures:
            return None
        return self._failures.pop(next(iter(self._failures)))

    def unreported_failures(self) -> int:
        return len(self._failures)

    async def run(self) -> None:
        """The writer loop; runs until cancelled (the store closing)."""
        try:
            while True:
                if not self._queue:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    if self._window > 0:
                        await anyio.sleep(self._window)  # let concurrent runs join in
                groups = self._take()
                if groups:
                    await self._commit(groups)
        finally:
            self._closed = True
            closed = StoreError("the PostgreSQL store was closed before this write was committed")
            for w in self._queue:
                self._settle(w, closed)
            self._queue = []

    def _take(self) -> list[Group]:
        """Up to max_events of queued writes as groups by run, keeping each run's order."""
        groups: dict[str, Group] = {}
        held: set[str] = set()  # runs with a write left for the next statement
        rest: list[Write] = []
        events = 0
        for w in self._queue:
            group = groups.get(w.run_id)
            if w.run_id in held or (group is None and events >= self._max_events):
                held.add(w.run_id)
                rest.append(w)
            elif group is None:
                groups[w.run_id] = Group.of(w)
                events += len(w.kinds)
            elif w.expected == group.last_seq and w.fence == group.fence:
                group.add(w)
                events += len(w.kinds)
            else:  # does not chain: it must see the outcome of the writes before it
                held.add(w.run_id)
                rest.append(w)
        self._queue = rest
        return list(groups.values())

    async def _commit(self, groups: list[Group]) -> None:
        try:
            outcomes = await self._write(groups)
        except Exception as exc:
            outcomes = [exc] * len(groups)
        except BaseException:
            unknown = StoreError(
                "the PostgreSQL store was closed while this write was in flight; "
                "it may or may not have been committed"
            )
            for group in groups:
                for w in group.writes:
                    self._settle(w, unknown)
            raise
        for group, outcome in zip(groups, outcomes, strict=True):
            for w in group.writes:
                self._settle(w, _for_write(outcome, w))

    def _settle(self, w: Write, exc: BaseException | None) -> None:
        w.exc = exc
        if exc is not None and not w.confirm:
            self._failures.setdefault(w.run_id, exc)  # the first failure is the cause
        w.done.set()
        if self._tails.get(w.run_id) is w:
            del self._tails[w.run_id]


def _for_write(exc: BaseException | None, w: Write) -> BaseException | None:
    """A merged group's conflict, restated with each write's own expected seq."""
    if isinstance(exc, ConflictError) and exc.expected_seq != w.expected:
        return ConflictError(w.run_id, w.expected, exc.actual_seq)
    return exc
