"""Reading journals for telemetry: from a background thread, and for the CLI.

The runtime hands listeners the events it records, but not every event of a
run: ``run_started`` is written by ``create_run`` without passing listeners,
and a run resumed in a new process arrives mid-journal. Telemetry threads then
read what they missed from the store with a :class:`StoreReader`, which never
touches the runtime's event loop: an in-memory store is read directly, any
other store through its own connection on a private event loop thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

from ..errors import StoreError
from ..events import Event
from ..store import MemoryStore, RunQuery, Store, store_from_url

log = logging.getLogger("mainspring.telemetry")

T = TypeVar("T")

#: ``reader(run_id, after, until)``: the events with ``after < seq <= until``.
JournalReader = Callable[[str, int, int], list[Event]]


def _run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the in-memory store's) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the store read suspended; it cannot be read without an event loop")


class StoreReader:
    """A :data:`JournalReader` over a store (an open ``Store`` object or a URL)."""

    def __init__(self, source: Store | str) -> None:
        self._memory = source if isinstance(source, MemoryStore) else None
        self._url = source if isinstance(source, str) else source.url
        if self._memory is None and self._url.startswith("memory:"):
            raise StoreError(
                "an in-memory store can only be read through its Store object, not its URL"
            )
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[Any] | None = None
        self._portal: Any = None
        self._store: Store | None = None

    def __call__(self, run_id: str, after: int, until: int) -> list[Event]:
        if self._memory is not None:
            try:
                return _run_now(self._memory.read(run_id, after=after, until=until))
            except StoreError:  # closed by its runtime; its events are still there
                events: list[Event] = getattr(self._memory, "_events", {}).get(run_id, [])
                return events[after:until]
        with self._lock:
            portal, store = self._open()
            result: list[Event] = portal.call(partial(store.read, run_id, after=after, until=until))
            return result

    def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        """``Store.save_cursors`` from a thread (the tracer's export thread)."""
        if self._memory is not None:
            _run_now(self._memory.save_cursors(name, cursors))
            return
        with self._lock:
            portal, store = self._open()
            portal.call(store.save_cursors, name, cursors)

    def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        """``Store.load_cursors`` from a thread (the tracer's)."""
        if self._memory is not None:
            return _run_now(self._memory.load_cursors(name, run_ids))
        with self._lock:
            portal, store = self._open()
            found: dict[str, int] = portal.call(store.load_cursors, name, run_ids)
            return found

    def _open(self) -> tuple[Any, Store]:
        if self._store is None:
            from anyio.from_thread import start_blocking_portal

            cm = start_blocking_portal()
            portal = cm.__enter__()
            store = store_from_url(self._url)
            try:
                portal.call(store.open)
            except BaseException:
                cm.__exit__(None, None, None)
                raise
            self._portal_cm, self._portal, self._store = cm, portal, store
        return self._portal, self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None and self._portal_cm is not None:
                try:
                    self._portal.call(self._store.aclose)
                except Exception as exc:
                    log.warning("telemetry could not close its store reader: %s", exc)
                finally:
                    self._portal_cm.__exit__(None, None, None)
                    self._store = self._portal = self._portal_cm = None


def as_reader(source: Store | str | JournalReader | None) -> JournalReader | None:
    if source is None:
        return None
    if isinstance(source, str | MemoryStore | Store):
        return StoreReader(source)
    return source


async def trace_events(store: Store, run_id: str) -> list[Event]:
    """A run's journal followed by its subgraph runs' journals (recursively)."""
    events = await store.read(run_id)
    for child in await store.list_runs(RunQuery(parent_run_id=run_id, limit=100_000)):
        events.extend(await trace_events(store, child.run_id))
    return events
