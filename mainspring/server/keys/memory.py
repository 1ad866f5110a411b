"""API keys in memory: for tests and for a server whose keys live as long as its process."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._core import KeyStoreCore, StoredKey
from .protocol import KeyInfo


class MemoryKeyStore(KeyStoreCore):
    """Keys in a dict (their hashes, as every backend keeps them)."""

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(**options)
        self.url = url
        self._rows: dict[str, StoredKey] = {}

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def _insert(self, row: StoredKey) -> None:
        self._rows[row.info.key_id] = row

    async def _fetch(self, key_id: str) -> StoredKey | None:
        return self._rows.get(key_id)

    async def _revoke(self, key_id: str, at: float) -> bool:
        row = self._rows.get(key_id)
        if row is None or row.info.revoked_at is not None:
            return False
        self._rows[key_id] = StoredKey(
            dataclasses.replace(row.info, revoked_at=at), row.secret_hash
        )
        return True

    async def _list(self, tenant: str | None) -> list[KeyInfo]:
        keys = [r.info for r in self._rows.values() if tenant is None or r.info.tenant == tenant]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))
