"""Live events across processes: a runtime announces its commits, a server hears them.

A client follows a run on one API server while a worker on another machine drives it:
the worker's runtime announces each commit (``(run_id, last_seq, status)``, coalesced
per run, never blocking the commit), the server's stream hub hears it and reads the
journal after the last event it sent. The journal stays the source of truth: an
announcement is only a wake-up, and a subscriber that missed some (a lost link, a
full buffer) finds the events by its safety-net poll or on reconnect.

``Runtime(store, fanout=...)`` (``mainspring serve --events``, ``mainspring worker
--events``) chooses the transport:

* ``"auto"``: PostgreSQL NOTIFY on a PostgreSQL store, nothing otherwise: the default of
  ``mainspring serve``, ``mainspring worker`` and ``create_app(url)``, the processes of a
  deployment;
* ``None`` (a plain Runtime's default) or ``"off"``: no announcements (a server follows
  this runtime's runs by polling their records). Announcing costs the writer a NOTIFY
  per commit after a quiet spell, at most one per ``interval`` (2 ms) when busy: noise
  beside a model call, but ~25% of a trivial durable step's CPU (W3: 240 -> 304 us;
  wall +2%), which a script that no server watches need not pay (``benchmarks/fanout.py``);
* ``"pg"``: ``NOTIFY mainspring_events`` on the store's own server (``fanout/postgres``);
* ``"redis://host:6379/0"``: Redis pub/sub (``fanout/redis``; the ``redis`` extra);
* ``"off"``: no announcements (other servers follow this runtime's runs by polling);
* an :class:`EventFanout` made by hand (its own buffer, retry, transport).

docs/server-streams.md ("Runs driven by other processes") has the details and numbers.
"""

from __future__ import annotations

import sys

from ..store import Store
from .fanout import EventFanout, FanoutError
from .protocol import Announcement, Transport, decode, encode, store_key

__all__ = [
    "Announcement",
    "EventFanout",
    "FanoutError",
    "Transport",
    "check_choice",
    "decode",
    "encode",
    "fanout_from",
    "store_key",
]

#: What ``--events`` and ``fanout=`` accept, for messages.
CHOICES = "'auto', 'pg' (PostgreSQL NOTIFY), a Redis URL (redis://host:6379/0) or 'off'"


def check_choice(spec: str) -> str:
    """``spec`` if it names a fan-out (without a store to check it against), else a
    :class:`FanoutError` saying what to give: for command-line options."""
    choice = spec.strip()
    if choice.lower() in ("auto", "off", "pg", "postgres", "postgresql") or choice.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        return choice
    raise FanoutError(f"events {spec!r} is not a fan-out; give {CHOICES}")


def fanout_from(spec: EventFanout | str | None, store: Store) -> EventFanout | None:
    """The fan-out ``spec`` names for a runtime on ``store`` (see the module's docstring);
    a :class:`FanoutError` says what to give instead of a bad one."""
    if isinstance(spec, EventFanout):
        return spec
    if spec is None:
        return None
    choice = spec.strip()
    if choice.lower() == "auto":
        return _pg() if _is_postgres(store) else None
    if choice.lower() == "off":
        return None
    if choice.lower() in ("pg", "postgres", "postgresql"):
        if not _is_postgres(store):
            raise FanoutError(
                f"events 'pg' needs a PostgreSQL store, not {type(store).__name__}; "
                "give a Redis URL (redis://host:6379/0) or 'off'"
            )
        return _pg()
    if choice.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis import RedisTransport
        except ImportError as exc:
            raise FanoutError(
                f"events over Redis need the redis extra ({exc.name} is missing): "
                "pip install 'mainspring[redis]'"
            ) from None
        return EventFanout(RedisTransport(choice))
    raise FanoutError(f"events {spec!r} is not a fan-out; give {CHOICES}")


def _is_postgres(store: Store) -> bool:
    # The PostgreSQL store's module is imported by whoever made one: no import here.
    module = sys.modules.get("mainspring.store.postgres")
    return module is not None and isinstance(store, module.PostgresStore)


def _pg() -> EventFanout:
    from .postgres import PgTransport

    return EventFanout(PgTransport())
