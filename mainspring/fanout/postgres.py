"""The fan-out over PostgreSQL: ``NOTIFY mainspring_events`` and ``LISTEN``, the default on
a PostgreSQL store (nothing else to run).

Sending: one simple query per batch (a ``NOTIFY`` per run), on a connection of its own
(never the pool's: a run's commit never waits behind it). Each
notification's payload is ``<schema>:<run_id>:<last_seq>:<status>`` (``protocol``): one
channel per database, the schema tells the stores apart. Listening: a connection of its
own (``store/_pg_listener``), pinged every ``ping_every`` idle seconds.

PostgreSQL refuses payloads of 8000 bytes or more: such an announcement (a run id of
kilobytes) is not sent, its listeners find the run by their safety-net poll.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..store import Store
from ..store._pg_listener import PgListener
from ..store._pg_pool import Connection
from ..store.postgres import PostgresStore
from .fanout import FanoutError
from .protocol import Announcement, decode, encode

CHANNEL = "mainspring_events"
_MAX_PAYLOAD = 7999  # bytes: PostgreSQL's limit is 8000


def notify_sql(payloads: Sequence[str]) -> str:
    """``NOTIFY`` statements in one simple query: no parameters, so no bind round of the
    extended protocol (~30% less client CPU per send than a prepared ``pg_notify``). The
    payloads are escaped as ``E''`` strings, safe whatever ``standard_conforming_strings``."""
    return ";".join(f"NOTIFY {CHANNEL}, E'{_escaped(p)}'" for p in payloads)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


class PgTransport:
    """See the module's docstring."""

    name = "pg"

    def __init__(self, *, ping_every: float = 30.0) -> None:
        if ping_every <= 0:
            raise ValueError("PgTransport: ping_every must be > 0")
        self._ping_every = ping_every
        self._store: PostgresStore | None = None
        self.key = ""
        self._conn: Connection | None = None
        self.listener: PgListener | None = None  # while listening (tests end its backend)

    async def open(self, store: Store) -> None:
        if not isinstance(store, PostgresStore):
            raise FanoutError(
                f"events 'pg' (PostgreSQL NOTIFY) needs a PostgreSQL store, not "
                f"{type(store).__name__}; give a Redis URL (redis://host:6379/0) or 'off'"
            )
        self._store, self.key = store, store.target.schema

    def _live(self) -> PostgresStore:
        if self._store is None:
            raise FanoutError("the PostgreSQL fan-out is not open; the runtime opens it")
        return self._store

    async def send(self, batch: Sequence[Announcement]) -> None:
        store = self._live()
        payloads = [p for a in batch if len((p := encode(self.key, a)).encode()) < _MAX_PAYLOAD]
        if not payloads:
            return
        conn = self._conn
        if conn is None or conn.is_closed():
            conn = self._conn = await store.connection()
        try:
            await conn.execute(notify_sql(payloads), timeout=store.call_timeout)
        except BaseException:
            self._conn = None
            conn.terminate()  # in an unknown state: the next send opens another
            raise

    async def listen(
        self, heard: Callable[[Announcement], None], ready: Callable[[], None]
    ) -> None:
        store, key = self._live(), self.key

        def notified(payload: str) -> None:
            announcement = decode(key, payload)
            if announcement is not None:
                heard(announcement)

        listener = self.listener = PgListener(store.connection, {CHANNEL: notified}, _nothing)
        try:
            if not await listener.ensure():
                raise ConnectionError(f"could not LISTEN {CHANNEL} (see the debug log)")
            ready()
            await listener.until_lost(self._ping_every, store.call_timeout)
        finally:
            listener.close()
            if self.listener is listener:
                self.listener = None

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # nothing in flight: the sender has stopped
        if self.listener is not None:
            self.listener.close()


def _nothing() -> None:
    """A lost link is told by ``until_lost`` returning: the fan-out resyncs then."""
