"""API keys: per tenant, with scopes, stored hashed (``protocol.py``; backends beside it).

``key_store_from_url(url)`` builds (does not open) the key store that lives with the
journal store at ``url``: ``memory://``, ``sqlite:///path.db`` (a table in that file),
``postgresql://...`` (a table in that schema).
"""

from __future__ import annotations

from typing import Any

from ...errors import StoreError
from ._core import KeyStoreCore
from .protocol import ALL_TENANTS, KeyInfo, KeyStore, Principal, Scope, parse_scopes


def key_store_from_url(url: str, **options: Any) -> KeyStoreCore:
    """The key store beside the journal store at ``url`` (the URLs ``store_from_url`` takes).

    ``options``: ``cache_ttl`` (seconds a verified key is trusted without a lookup; a
    revocation made elsewhere takes effect within it), ``cache_size``.
    """
    scheme, sep, _ = url.partition("://")
    if not sep and url.endswith((".db", ".sqlite", ".sqlite3")):
        scheme, url = "sqlite", f"sqlite:///{url}"
    if scheme == "memory":
        from .memory import MemoryKeyStore

        return MemoryKeyStore(url, **options)
    if scheme == "sqlite":
        from .sqlite import SQLiteKeyStore

        return SQLiteKeyStore(url, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresKeyStore
        except ImportError as exc:  # asyncpg is an optional extra
            raise StoreError(
                f"keys on PostgreSQL need asyncpg ({exc}); pip install 'mainspring[postgres]'"
            ) from None
        return PostgresKeyStore(url, **options)
    raise StoreError(
        f"no key store for {url!r}; use memory://, sqlite:///path/to/file.db or "
        "postgresql://user@host/db (the server's store URL)"
    )


__all__ = [
    "ALL_TENANTS",
    "KeyInfo",
    "KeyStore",
    "KeyStoreCore",
    "Principal",
    "Scope",
    "key_store_from_url",
    "parse_scopes",
]
