"""Session memory in this process: dicts of encoded values, for one event loop.

Values are kept as the JSON bytes Redis would hold (encoded once at write, decoded at
read), so the two backends accept and return the same things and a caller can never
change a stored value through a reference it holds.

Expiry is lazy: an access finds an expired entry and drops it. An occasional sweep
(a few threads every few hundred operations, round-robin) drops threads and entries
nobody reads any more; there are no timers. Every method runs to completion without
awaiting, so each is atomic with respect to other tasks on the loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from ..errors import VersionConflict
from .protocol import (
    DEFAULT_TTL,
    SessionMemory,
    SessionSnapshot,
    ThreadActivity,
    TTLArg,
    Versioned,
)
from .values import (
    bad_names,
    check_idle_for,
    check_last,
    check_names,
    check_time,
    check_ttl,
    check_version,
    decode,
    encode,
    encode_snapshot,
    resolve_ttl,
)

_NEVER = float("inf")
_SWEEP_EVERY = 256  # operations between two sweep steps
_SWEEP_THREADS = 16  # threads looked at per step
# Every write moves a thread's reported last write on by at least this (seconds), even
# on a clock that did not move (more than the rounding of clock + epoch offset, ~0.24 us).
_TICK = 1e-6


class _Entry:
    """A value, the TTL it was written with and when it expires (clock time)."""

    __slots__ = ("data", "deadline", "ttl", "version")

    def __init__(self, data: bytes, ttl: float | None, now: float, version: int = 0) -> None:
        self.data = data
        self.ttl = ttl
        self.deadline = _NEVER if ttl is None else now + ttl
        self.version = version


class _Thread:
    __slots__ = ("deadline", "last_write", "messages", "shared", "stamp", "values")

    def __init__(self, now: float) -> None:
        self.values: dict[str, _Entry] = {}
        self.shared: dict[str, _Entry] = {}
        self.messages: _Messages | None = None
        self.last_write = now
        # The last write as reported (last_active): moves on at every write, even on a
        # clock that did not, so clear_if_unchanged tells any later write from the one
        # it saw. last_write stays the clock's time, for idle_for.
        self.stamp = float("-inf")
        self.deadline = now  # no entry outlives it: past it, the whole thread is expired

    def wrote(self, entry: _Entry | _Messages, now: float) -> None:
        self.last_write = now
        self.stamp = now if now > self.stamp + _TICK else self.stamp + _TICK
        if entry.deadline > self.deadline:
            self.deadline = entry.deadline

    def prune(self, now: float) -> bool:
        """Drop what expired; whether anything is left."""
        if self.deadline <= now:
            return False
        for entries in (self.values, self.shared):
            for key in [k for k, e in entries.items() if e.deadline <= now]:
                del entries[key]
        if self.messages is not None and self.messages.deadline <= now:
            self.messages = None
        return bool(self.values or self.shared or self.messages)


class _Messages:
    __slots__ = ("deadline", "items", "ttl")

    def __init__(self, ttl: float | None, now: float) -> None:
        self.items: list[bytes] = []
        self.ttl = ttl
        self.deadline = _NEVER if ttl is None else now + ttl


class _Closed(dict[str, dict[str, _Thread]]):
    """What ``_tenants`` becomes on ``aclose``: every lookup raises, so a closed memory
    says so instead of answering as an empty one (no check on the hot path)."""

    def _closed(self, *args: object) -> Any:
        raise StoreError("this LocalSessionMemory is closed: open a new one to use it")

    get = __getitem__ = __setitem__ = __contains__ = pop = items = _closed


class LocalSessionMemory(SessionMemory):
    """Session memory in this process (one event loop; not shared between processes).

    ``ttl``: the default TTL of every write in seconds (None: never expire);
    ``refresh_on_read``: a read extends what it read by its TTL; ``clock``: seconds,
    monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        ttl: float | None = 3600,
        refresh_on_read: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = check_ttl(ttl)
        self.refresh_on_read = bool(refresh_on_read)
        self._clock = clock
        self._to_epoch = time.time() - clock()  # clock time -> epoch seconds
        self._tenants: dict[str, dict[str, _Thread]] = {}
        self._sweep_queue: deque[tuple[str, str, _Thread]] = deque()
        self._ops = 0

    # --- key-value -------------------------------------------------------------------

    # get and set are the hot path: checks and lookups inlined (each call saved is ~0.1 us).

    async def get(self, thread: str, key: str, *, tenant: str = "") -> Any | None:
        if type(thread) is not str or type(key) is not str or type(tenant) is not str:
            bad_names(thread, tenant, key)
        threads = self._tenants.get(tenant)
        state = None if threads is None else threads.get(thread)
        entry = None if state is None else state.values.get(key)
        if entry is None:
            if not thread or not key:
                bad_names(thread, tenant, key)
            return None
        assert state is not None
        now = self._clock()
        if entry.deadline <= now:
            del state.values[key]
            return None
        if self.refresh_on_read and entry.ttl is not None:
            deadline = entry.deadline = now + entry.ttl
            if deadline > state.deadline:
                state.deadline = deadline
        self._ops += 1
        if not self._ops % _SWEEP_EVERY:
            self._sweep(now)
        return decode(entry.data)

    async def set(
        self, thread: str, key: str, value: Any, *, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> None:
        if (
            type(thread) is not str
            or type(key) is not str
            or type(tenant) is not str
            or not thread
            or not key
        ):
            bad_names(thread, tenant, key)
        ttl = self.ttl if ttl is DEFAULT_TTL else check_ttl(ttl)
        data = encode(value, "the value of key {!r}", key)[0]
        now = self._clock()
        threads = self._tenants.get(tenant)
        state = None if threads is None else threads.get(thread)
        if state is None:
            state = self._thread_for_write(tenant, thread, now)
        entry = state.values.get(key)
        if entry is None:
            entry = state.values[key] = _Entry(data, ttl, now)
        else:  # overwrite in place: cheaper than a new entry
            entry.data, entry.ttl = data, ttl
            entry.deadline = _NEVER if ttl is None else now + ttl
        state.last_write = now
        stamp = state.stamp + _TICK
        state.stamp = now if now > stamp else stamp
        if entry.deadline > state.deadline:
            state.deadline = entry.deadline
        self._ops += 1
        if not self._ops % _SWEEP_EVERY:
            self._sweep(now)

    async def delete(self, thread: str, key: str, *, tenant: str = "") -> bool:
        check_names(thread, tenant, key)
        state = self._live_thread(tenant, thread)
        entry = None if state is None else state.values.pop(key, None)
        now = self._clock()
        if entry is None or entry.deadline <= now:
            return False
        assert state is not None
        state.last_write = now
        stamp = state.stamp + _TICK
        state.stamp = now if now > stamp else stamp
        return True

    async def keys(self, thread: str, *, tenant: str = "") -> list[str]:
        check_names(thread, tenant)
        state = self._live_thread(tenant, thread)
        if state is None:
            return []
        state.prune(self._clock())
        return sorted(state.values)

    # --- messages --------------------------------------------------------------------

    async def append(
        self, thread: str, *messages: Any, ttl: TTLArg = DEFAULT_TTL, tenant: str = ""
    ) -> int:
        check_names(thread, tenant)
        ttl = resolve_ttl(ttl, self.ttl)
        encoded = [encode(m, "message {} of the append", i)[0] for i, m in enumerate(messages)]
        now = self._clock()
        if not encoded:  # nothing to write: the length, as Redis's LLEN would say
            state = self._live_thread(tenant, thread)
            log = None if state is None else state.messages
            return 0 if log is None or log.deadline <= now else len(log.items)
        state = self._thread_for_write(tenant, thread, now)
        old = state.messages
        log = state.messages = _Messages(ttl, now)
        if old is not None and old.deadline > now:
            log.items = old.items
        log.items.extend(encoded)
        state.wrote(log, now)
        self._tick(now)
        return len(log.items)

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]:
        check_names(thread, tenant)
        last = check_last(last)
        state = self._live_thread(tenant, thread)
        log = None if state is None else state.messages
        if log is None or last == 0:
            return []
        assert state is not None
        now = self._clock()
        if log.deadline <= now:
            state.messages = None
            return []
        if self.refresh_on_read and log.ttl is not None:
            self._refresh(state, log, now)
        self._tick(now)
        items = log.items if last is None else log.items[-last:]
        return [decode(d) for d in items]

    # --- shared, versioned -----------------------------------------------------------

    async def read_shared(self, thread: str, key: str, *, tenant: str = "") -> Versioned | None:
        check_names(thread, tenant, key)
        state = self._live_thread(tenant, thread)
        entry = None if state is None else state.shared.get(key)
        if entry is None:
            return None
        assert state is not None
        now = self._clock()
        if entry.deadline <= now:
            del state.shared[key]
            return None
        if self.refresh_on_read and entry.ttl is not None:
            self._refresh(state, entry, now)
        self._tick(now)
        return Versioned(decode(entry.data), entry.version)

    async def compare_and_set(
        self,
        thread: str,
        key: str,
        value: Any,
        *,
        expected: int,
        ttl: TTLArg = DEFAULT_TTL,
        tenant: str = "",
    ) -> Versioned:
        check_names(thread, tenant, key)
        check_version(expected)
        ttl = resolve_ttl(ttl, self.ttl)
        data, back = encode(value, "the shared value {!r}", key)
        now = self._clock()
        state = self._live_thread(tenant, thread)
        current = None if state is None else state.shared.get(key)
        if current is not None and current.deadline <= now:
            current = None
        version = 0 if current is None else current.version
        if version != expected:
            found = None if current is None else Versioned(decode(current.data), version)
            raise VersionConflict(thread, key, expected, found, tenant=tenant)
        state = self._thread_for_write(tenant, thread, now)
        entry = state.shared[key] = _Entry(data, ttl, now, version + 1)
        state.wrote(entry, now)
        self._tick(now)
        return Versioned(back, version + 1)

    # --- whole threads ---------------------------------------------------------------

    async def clear(self, thread: str, *, tenant: str = "") -> None:
        check_names(thread, tenant)
        threads = self._tenants.get(tenant)
        if threads is not None:
            threads.pop(thread, None)
            if not threads:
                del self._tenants[tenant]

    async def clear_if_unchanged(
        self, thread: str, last_active: float, *, tenant: str = ""
    ) -> bool:
        check_names(thread, tenant)
        last_active = check_time(last_active)
        state = self._live_thread(tenant, thread)
        if state is None or not state.prune(self._clock()):
            return False
        if state.stamp + self._to_epoch != last_active:
            return False
        self._drop(tenant, thread, state)
        return True

    async def threads(self, *, tenant: str = "", idle_for: float = 0) -> list[ThreadActivity]:
        check_names("-", tenant)
        idle_for = check_idle_for(idle_for)
        now = self._clock()
        found = []
        for name, state in list(self._tenants.get(tenant, {}).items()):
            if not state.prune(now):
                self._drop(tenant, name, state)
            elif now - state.last_write >= idle_for:
                found.append(ThreadActivity(name, tenant, state.stamp + self._to_epoch))
        found.sort(key=lambda t: t.last_active)
        return found

    async def snapshot(self, thread: str, *, tenant: str = "") -> SessionSnapshot:
        check_names(thread, tenant)
        state = self._live_thread(tenant, thread)
        if state is None or not state.prune(self._clock()):
            return SessionSnapshot(thread, tenant)
        return SessionSnapshot(
            thread,
            tenant,
            values={k: decode(e.data) for k, e in sorted(state.values.items())},
            messages=[] if state.messages is None else [decode(d) for d in state.messages.items],
            shared={
                k: Versioned(decode(e.data), e.version) for k, e in sorted(state.shared.items())
            },
            last_active=state.stamp + self._to_epoch,
        )

    async def restore(self, snapshot: SessionSnapshot) -> None:
        encoded = encode_snapshot(snapshot)  # everything checked before anything changes
        thread, tenant = snapshot.thread, snapshot.tenant
        now = self._clock()
        current = self._live_thread(tenant, thread)
        if current is not None and not current.prune(now):
            self._drop(tenant, thread, current)
        state = self._thread_for_write(tenant, thread, now)
        # Merged under what the thread holds now: its keys and shared values win, its
        # messages come after the archived ones (no await: atomic on this loop).
        for key, data in encoded.values.items():
            if key not in state.values:
                entry = state.values[key] = _Entry(data, self.ttl, now)
                state.wrote(entry, now)
        for key, (version, data) in encoded.shared.items():
            if key not in state.shared:
                entry = state.shared[key] = _Entry(data, self.ttl, now, version)
                state.wrote(entry, now)
        if encoded.messages:
            old = state.messages
            log = state.messages = _Messages(self.ttl if old is None else old.ttl, now)
            log.items = [*encoded.messages, *(() if old is None else old.items)]
            state.wrote(log, now)
        if not state.prune(now):
            self._drop(tenant, thread, state)

    async def aclose(self) -> None:
        self._tenants = _Closed()
        self._sweep_queue.clear()

    # --- internals -------------------------------------------------------------------

    def _live_thread(self, tenant: str, thread: str) -> _Thread | None:
        threads = self._tenants.get(tenant)
        return None if threads is None else threads.get(thread)

    def _thread_for_write(self, tenant: str, thread: str, now: float) -> _Thread:
        threads = self._tenants.get(tenant)
        if threads is None:
            threads = self._tenants[tenant] = {}
        state = threads.get(thread)
        if state is None:
            state = threads[thread] = _Thread(now)
            self._sweep_queue.append((tenant, thread, state))
        return state

    @staticmethod
    def _refresh(state: _Thread, entry: _Entry | _Messages, now: float) -> None:
        assert entry.ttl is not None
        deadline = entry.deadline = now + entry.ttl
        if deadline > state.deadline:
            state.deadline = deadline

    def _tick(self, now: float) -> None:
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Look at the next few threads (round-robin): drop them if nothing in them is
        alive, else drop their expired entries."""
        queue = self._sweep_queue
        for _ in range(min(_SWEEP_THREADS, len(queue))):
            tenant, name, state = queue.popleft()
            if self._live_thread(tenant, name) is not state:
                continue  # cleared (and perhaps made anew, with its own place in the queue)
            if state.prune(now):
                queue.append((tenant, name, state))
            else:
                self._drop(tenant, name, state)

    def _drop(self, tenant: str, name: str, state: _Thread) -> None:
        threads = self._tenants.get(tenant)
        if threads is not None and threads.get(name) is state:
            del threads[name]
            if not threads:
                del self._tenants[tenant]
