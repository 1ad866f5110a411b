"""What every key store shares: the key's format, its hash, and verification with a cache.

A backend stores rows (:class:`StoredKey`: the key's info and the SHA-256 of its secret)
and implements four small methods; :class:`KeyStoreCore` makes keys, checks them and
revokes them on top, the same way for every backend.

Verification is built not to be an oracle:

* the secret is compared by its SHA-256 with :func:`hmac.compare_digest` (constant time);
* an unknown key id is compared against a dummy hash all the same, and unknown, revoked
  and wrong keys get the same ``None`` (the server's one 401), so a caller learns
  nothing about which key ids exist beyond the (index) lookup both cases make;
* verified keys are cached in process for ``cache_ttl`` seconds (default 5), keyed by the
  SHA-256 of the whole key, so only the exact valid key ever hits the cache. A key
  revoked through this store object is dropped from its cache at once; revoked through
  another process (``mainspring keys revoke``), it stops working here within
  ``cache_ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .protocol import KeyInfo, Principal, Scope, check_tenant, parse_scopes

PREFIX: Final = "ms"
_KEY = re.compile(r"ms_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: Compared against when a key id is unknown, so that a miss costs what a hit does.
_DUMMY: Final = hashlib.sha256(b"mainspring: no such key").digest()


def new_key() -> tuple[str, str, bytes]:
    """A fresh key: (key id, the whole key, the SHA-256 of its secret)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 32 bytes: 43 URL-safe characters
    return key_id, f"{PREFIX}_{key_id}_{secret}", secret_hash(secret)


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key; None otherwise."""
    found = _KEY.fullmatch(key)
    return None if found is None else (found.group(1), found.group(2))


def key_id_of(key: str) -> str | None:
    parts = split_key(key)
    return None if parts is None else parts[0]


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def scopes_text(scopes: frozenset[Scope]) -> str:
    """Scopes as stored: sorted, comma-separated."""
    return ",".join(sorted(s.value for s in scopes))


#: What a lookup of an unknown id gets for the hash (a parameter of its SQL), so that its
#: row has a value of every type a known key's row has: decoded alike, in the same time.
DUMMY_HASH: Final = _DUMMY


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's row: its info and the hash of its secret (never the secret)."""

    info: KeyInfo
    secret_hash: bytes


def info_of(row: Sequence[Any]) -> KeyInfo:
    """A key's info from its row: (key_id, tenant, scopes, name, created_at, revoked_at, ...)."""
    key_id, tenant, scopes, name, created_at, revoked_at = row[:6]
    return KeyInfo(key_id, tenant, parse_scopes(scopes), name, created_at, revoked_at)


def stored_of(row: Sequence[Any]) -> StoredKey | None:
    """The key of a lookup's one row: (id, tenant, scopes, name, created_at, revoked_at,
    secret_sha256, found), an unknown id's filled in by the SQL (``LEFT JOIN`` and
    ``COALESCE``) and decoded all the same, so that a miss costs what a hit does."""
    stored = StoredKey(info_of(row), bytes(row[6]))
    return stored if row[7] else None


class KeyStoreCore(ABC):
    """Key making, checking (with the cache) and revoking over a backend's rows."""

    def __init__(
        self,
        *,
        cache_ttl: float = 5.0,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_ttl < 0:
            raise ValueError(f"cache_ttl={cache_ttl!r} must be 0 (no cache) or more seconds")
        self.cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        # sha256(whole key) -> (principal, monotonic time it stops being trusted)
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    # -- what a backend implements --------------------------------------------------------

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def _insert(self, row: StoredKey) -> None: ...

    @abstractmethod
    async def _fetch(self, key_id: str) -> StoredKey | None: ...

    @abstractmethod
    async def _revoke(self, key_id: str, at: float) -> bool:
        """Mark the key revoked at ``at``; False if unknown or revoked already."""

    @abstractmethod
    async def _list(self, tenant: str | None) -> list[KeyInfo]: ...

    # -- the protocol ---------------------------------------------------------------------

    async def create(
        self, tenant: str, scopes: frozenset[Scope], name: str = ""
    ) -> tuple[KeyInfo, str]:
        check_tenant(tenant)
        if not scopes:
            raise ValueError("a key needs at least one scope: read, run, approve or admin")
        key_id, key, digest = new_key()
        info = KeyInfo(key_id, tenant, frozenset(scopes), name, time.time())
        await self._insert(StoredKey(info, digest))
        return info, key

    async def verify(self, key: str) -> Principal | None:
        parts = split_key(key)
        if parts is None:
            return None
        whole = hashlib.sha256(key.encode()).digest()
        now = self._clock()
        cached = self._cache.get(whole)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[whole]
        key_id, secret = parts
        row = await self._fetch(key_id)
        # The comparison runs whether or not the id is known: the same work either way.
        matches = hmac.compare_digest(row.secret_hash if row else _DUMMY, secret_hash(secret))
        if row is None or not matches or row.info.revoked_at is not None:
            return None
        principal = row.info.principal
        if self.cache_ttl > 0:
            self._cache[whole] = (principal, now + self.cache_ttl)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    async def revoke(self, key_id: str) -> bool:
        revoked = await self._revoke(key_id, time.time())
        for whole, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[whole]
        return revoked

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        return await self._list(tenant)

    async def get(self, key_id: str) -> KeyInfo | None:
        """One key's info (revoked or not), for tools; never its secret."""
        row = await self._fetch(key_id)
        return None if row is None else row.info
