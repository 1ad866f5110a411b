"""Change notifications of the PostgreSQL item store: LISTEN on a connection of its own.

A write that changes vectors sends ``NOTIFY mainspring_semantic, '<schema>.<prefix>'``
in its transaction (delivered at commit). :class:`ChangeSignal` listens (through the
store's shared :class:`~mainspring.store._pg_listener.PgListener`), and wakes a reader of
the change feed waiting in :meth:`ChangeSignal.wait`. Notifications are not durable (a
connection lost loses them), so the signal is a wake-up, never the only path: readers
poll as well, and a lost listening connection wakes them at once and is reopened on a
later wait.
"""

from __future__ import annotations

import asyncio

import anyio

from ...store._pg_listener import PgListener
from ...store._pg_pool import Connect

CHANNEL = "mainspring_semantic"


class ChangeSignal:
    """Set when the store named ``payload`` may have new changes; cleared by the reader."""

    def __init__(self, connect: Connect, payload: str) -> None:
        self.payload = payload
        self._listener = PgListener(connect, {CHANNEL: self._on_notify}, self._on_lost)
        self._changed = asyncio.Event()

    async def listen(self) -> None:
        """Open the LISTEN connection, if it is not open; failing that, readers poll."""
        await self._listener.ensure()  # at most one attempt a second

    def clear(self) -> None:
        """Called as a read of the feed begins: what is notified from now on wakes."""
        self._changed.clear()

    async def wait(self, timeout: float) -> bool:
        """True when woken by a notification (or a lost connection), False on timeout."""
        if not self._listener.listening:
            await self.listen()
        with anyio.move_on_after(timeout):
            await self._changed.wait()
            return True
        return False

    def close(self) -> None:
        self._listener.close()

    def _on_notify(self, payload: str) -> None:
        if payload == self.payload:
            self._changed.set()

    def _on_lost(self) -> None:
        self._changed.set()  # a notification may have been lost with it: read the feed
