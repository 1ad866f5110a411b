"""A stream's key, checked again while the stream lasts: a revoked key's streams end.

A stream's key is checked when it opens (the route's ``require``); a stream lasts hours,
so it is checked again through the key store's ``verify`` (which caches a valid key for
its ``cache_ttl``): on every keep-alive (a cache hit, mostly: no store read), and before a
batch of events when the last check is older than the cache's TTL. So a stream costs at
most one store read per TTL, and a key revoked elsewhere (``mainspring keys revoke``)
cuts its open streams within about ``cache_ttl`` + ``heartbeat`` seconds (docs/
server-security.md). The state kept per stream is small: the key, the store and the time
of the last check.
"""

from __future__ import annotations

import time

from starlette.requests import HTTPConnection

from ..auth import bearer_key, checked_key
from ..context import server_state
from ..keys.protocol import KeyStore, Scope


class KeyCheck:
    """Whether a stream's key still verifies (and still has ``scope``), asked cheaply."""

    __slots__ = ("checked", "key", "keys", "scope", "ttl")

    def __init__(self, keys: KeyStore, key: str, scope: Scope, ttl: float) -> None:
        self.keys, self.key, self.scope, self.ttl = keys, key, scope, ttl
        self.checked = time.monotonic()  # the route's own check, just made

    async def valid(self, *, idle: bool) -> bool:
        """True while the key verifies. ``idle`` (a keep-alive): ask the store's verify
        (its cache answers within its TTL); a batch: only if the last check is older
        than the TTL."""
        now = time.monotonic()
        if not idle and now - self.checked < self.ttl:
            return True
        principal = await self.keys.verify(self.key)
        self.checked = time.monotonic()
        return principal is not None and principal.allows(self.scope)


def key_check(conn: HTTPConnection, scope: Scope) -> KeyCheck | None:
    """The check of ``conn``'s key for its stream; None when the server checks no keys
    (``auth=False``, or no key store)."""
    state = server_state(conn)
    key = checked_key(conn) or bearer_key(conn)
    if not state.config.auth or state.keys is None or key is None:
        return None
    ttl = getattr(state.keys, "cache_ttl", None)
    if not isinstance(ttl, (int, float)) or ttl <= 0:
        ttl = state.config.heartbeat  # a store without a cache: one read per heartbeat
    return KeyCheck(state.keys, key, scope, float(ttl))
