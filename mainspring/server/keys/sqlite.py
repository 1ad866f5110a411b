"""API keys in the SQLite store's own file: a table ``api_keys`` beside the journal's.

One file holds everything a server needs (copy it, and its keys come along). The table is
made through the store's own open path (:func:`connect_writer`): the file is refused
unless it is a healthy Mainspring store (a missing one is created as a whole store
first), so a key command never turns a foreign or damaged file into something else, and
the journal store, which checks only its marks (``application_id``, ``user_version``)
and the integrity of every b-tree, opens a file with this table as it opens any other.
The table is not one of the store's versioned migrations: it belongs to the server, and
``CREATE TABLE IF NOT EXISTS`` needs no version of its own.

The connection is this store's own (a plain ``sqlite3`` connection, WAL like the
store's), used from worker threads under a lock so the event loop never waits on disk.
"""

from __future__ import annotations

import sqlite3
from typing import Any, TypeVar

from ..side_tables import SQLiteSideTable
from ._core import DUMMY_HASH, KeyStoreCore, StoredKey, info_of, scopes_text, stored_of
from .protocol import KeyInfo

T = TypeVar("T")

_TABLE = """CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL,
    secret_sha256 BLOB NOT NULL
) WITHOUT ROWID"""
_COLUMNS = "key_id, tenant, scopes, name, created_at, revoked_at"
# One row of the same types whether the id is known or not: no difference to time.
_LOOKUP = (
    "SELECT q.id, coalesce(k.tenant, '-'), coalesce(k.scopes, 'read'), coalesce(k.name, ''),"
    " coalesce(k.created_at, 0.0), k.revoked_at, coalesce(k.secret_sha256, q.dummy),"
    " k.key_id IS NOT NULL"
    " FROM (SELECT ? AS id, ? AS dummy) AS q LEFT JOIN api_keys AS k ON k.key_id = q.id"
)


class SQLiteKeyStore(SQLiteSideTable, KeyStoreCore):
    """``sqlite:///path.db``: the keys of the server whose journal is in ``path.db``."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0, **options: Any) -> None:
        KeyStoreCore.__init__(self, **options)
        SQLiteSideTable.__init__(self, url, _TABLE, "the API keys", busy_timeout=busy_timeout)
        self.url = url

    def __repr__(self) -> str:
        return f"<SQLiteKeyStore {str(self.path)!r}>"

    async def _insert(self, row: StoredKey) -> None:
        i = row.info
        args = (i.key_id, i.tenant, scopes_text(i.scopes), i.name, i.created_at, row.secret_hash)

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO api_keys (key_id, tenant, scopes, name, created_at, secret_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                args,
            )

        await self._run("saving a key", insert)

    async def _fetch(self, key_id: str) -> StoredKey | None:
        def fetch(db: sqlite3.Connection) -> tuple[Any, ...]:
            row: tuple[Any, ...] = db.execute(_LOOKUP, (key_id, DUMMY_HASH)).fetchone()
            return row

        return stored_of(await self._run("reading a key", fetch))

    async def _revoke(self, key_id: str, at: float) -> bool:
        def revoke(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            return cursor.rowcount == 1

        return await self._run("revoking a key", revoke)

    async def _list(self, tenant: str | None) -> list[KeyInfo]:
        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
            return db.execute(
                f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, key_id", args
            ).fetchall()

        return [info_of(row) for row in await self._run("listing keys", select)]
