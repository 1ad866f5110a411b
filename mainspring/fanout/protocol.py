"""What the processes sharing a store tell each other: "run R now ends at seq N".

An :class:`Announcement` is a wake-up, never data: the listener reads the journal after
the last seq it has (the journal is the source of truth), so an announcement lost,
repeated or late costs latency, never an event. On the wire it is one line of text,
``<key>:<run_id>:<last_seq>:<status>`` (``<key>``: the store's schema, or its file;
``<status>``: the run's new status if one of the announced commits changed it, else
empty). The run id may contain ``:``; the key is known to the listener, the last two
fields are split from the right.

A :class:`Transport` carries them between processes (``fanout/postgres``: NOTIFY and
LISTEN; ``fanout/redis``: PUBLISH and SUBSCRIBE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from ..store import Store


class Announcement(NamedTuple):
    run_id: str
    last_seq: int
    status: str | None  # the new status if an announced commit changed it


def encode(key: str, announcement: Announcement) -> str:
    run_id, last_seq, status = announcement
    return f"{key}:{run_id}:{last_seq}:{status or ''}"


def decode(key: str, payload: str) -> Announcement | None:
    """The announcement in ``payload``, if it is one about the store ``key`` names."""
    if not payload.startswith(key) or payload[len(key) : len(key) + 1] != ":":
        return None  # another schema's (one channel per database)
    run_id, _, rest = payload[len(key) + 1 :].rpartition(":")
    run_id, _, seq = run_id.rpartition(":")
    if not run_id or not seq.isdigit():
        return None
    return Announcement(run_id, int(seq), rest or None)


class Transport(Protocol):
    """One process's link to the others (see the module's docstring)."""

    #: What the transport is, for messages and metrics: ``"pg"``, ``"redis"``.
    name: str

    async def open(self, store: Store) -> None:
        """Ready to send about ``store``'s runs (raises a clear error if it cannot)."""

    async def send(self, batch: Sequence[Announcement]) -> None:
        """Send ``batch`` (one run at most once in it); raises if it could not."""

    async def listen(
        self, heard: Callable[[Announcement], None], ready: Callable[[], None]
    ) -> None:
        """Listen: ``ready()`` once listening, then ``heard`` for each announcement about
        this store, until the link is lost (returns or raises; the caller listens again)."""

    async def aclose(self) -> None: ...


def store_key(store: Store) -> str:
    """What names ``store`` to the processes sharing it: its schema on PostgreSQL, its file
    on SQLite. Other stores live in one process: nothing to fan out."""
    target = getattr(store, "target", None)
    schema = getattr(target, "schema", None)
    if isinstance(schema, str):
        return schema
    path = getattr(store, "path", None)
    if path is not None and store.capabilities.shared_between_processes:
        return str(path)
    raise ValueError(
        f"event fan-out needs a store shared between processes (PostgreSQL, SQLite); "
        f"{type(store).__name__} lives in one process: use fanout='off'"
    )
