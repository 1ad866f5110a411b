"""API keys in the PostgreSQL store's schema: a table ``api_keys`` beside the journal's.

The schema is the store's (``?schema=``, default ``mainspring``), checked and made by the
store's own migration first: a schema that is not a Mainspring store is refused untouched,
and a new database gets the whole store, so the journal store (which looks at its ``meta``
table only) opens it as any other. The table is the server's, made with ``CREATE TABLE IF
NOT EXISTS`` under an advisory lock of its own, so processes opening at once make it once.

Connections come from the store's small pool (:mod:`mainspring.store._pg_pool`): bounded
connects, a watchdog on unanswered calls, and transient failures retried for the URL's
``retry_for`` (here 5 s by default: a request waits on its key, not a batch job).
"""

from __future__ import annotations

from typing import Any

from ..side_tables import PostgresSideTable
from ._core import DUMMY_HASH, KeyStoreCore, StoredKey, info_of, scopes_text, stored_of
from .protocol import KeyInfo

_LOCK = (0x4D53, 0x6B657973)  # "MS", "keys": the advisory lock the table is made under
_COLUMNS = "key_id, tenant, scopes, name, created_at, revoked_at"
_DDL = """key_id text COLLATE "C" PRIMARY KEY,
    tenant text NOT NULL,
    scopes text NOT NULL,
    name text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    revoked_at double precision,
    secret_sha256 bytea NOT NULL"""


class PostgresKeyStore(PostgresSideTable, KeyStoreCore):
    """``postgresql://...``: the keys of the server whose journal is in that schema."""

    def __init__(self, url: str, **options: Any) -> None:
        KeyStoreCore.__init__(self, **options)
        PostgresSideTable.__init__(self, url, "api_keys", _DDL, _LOCK, "the API keys")
        self.url = url

    def __repr__(self) -> str:
        return f"<PostgresKeyStore {self.target} schema {self.target.schema!r}>"

    async def _insert(self, row: StoredKey) -> None:
        i, pool = row.info, self._live()
        sql = (
            f"INSERT INTO {self._table} (key_id, tenant, scopes, name, created_at, secret_sha256)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
        )
        args = (i.key_id, i.tenant, scopes_text(i.scopes), i.name, i.created_at, row.secret_hash)
        # Not retried after an unknown outcome: a lost reply would make a second key.
        await self._retrier.run("saving a key", lambda _: pool.execute(sql, *args), opening=True)

    async def _fetch(self, key_id: str) -> StoredKey | None:
        pool = self._live()
        # One row of the same types whether the id is known or not: no difference to time.
        sql = (
            "SELECT q.id, coalesce(k.tenant, '-'), coalesce(k.scopes, 'read'),"
            " coalesce(k.name, ''), coalesce(k.created_at, 0.0), k.revoked_at,"
            " coalesce(k.secret_sha256, q.dummy), k.key_id IS NOT NULL"
            f" FROM (SELECT $1::text AS id, $2::bytea AS dummy) AS q"
            f" LEFT JOIN {self._table} AS k ON k.key_id = q.id"
        )
        row = await self._retrier.run(
            "reading a key", lambda _: pool.fetchrow(sql, key_id, DUMMY_HASH)
        )
        assert row is not None
        return stored_of(tuple(row))

    async def _revoke(self, key_id: str, at: float) -> bool:
        pool = self._live()
        # Safe to retry: a second attempt after a lost reply finds its own timestamp.
        sql = (
            f"UPDATE {self._table} SET revoked_at = coalesce(revoked_at, $1) WHERE key_id = $2"
            " RETURNING revoked_at = $1"
        )
        mine = await self._retrier.run("revoking a key", lambda _: pool.fetchval(sql, at, key_id))
        return bool(mine)

    async def _list(self, tenant: str | None) -> list[KeyInfo]:
        pool = self._live()
        where, args = ("WHERE tenant = $1", [tenant]) if tenant is not None else ("", [])
        sql = f"SELECT {_COLUMNS} FROM {self._table} {where} ORDER BY created_at, key_id"
        rows = await self._retrier.run("listing keys", lambda _: pool.fetch(sql, *args))
        return [info_of(tuple(r)) for r in rows]
