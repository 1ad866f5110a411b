"""The embedded item store: one SQLite file (WAL) with FTS5 keyword search.

Items, their float32 vectors (blobs), an FTS5 index over their text (external
content, kept by triggers) and a change feed live in one file. Every call runs in a
worker thread on one connection guarded by a lock, so the event loop never waits on
disk. A file that is not a semantic memory (another SQLite database, or not SQLite at
all) is refused with :class:`~mainspring.errors.NotAStoreError` and left untouched.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import msgspec
import numpy as np

import mainspring.memory.semantic._sqlite_sql as sql

from ...errors import NotAStoreError, SchemaVersionError, StoreError
from ..scope import Scope
from .items import MemoryItem, Source, text_digest
from .protocols import Change, Selection, Vector

T = TypeVar("T")
_HEADER = b"SQLite format 3\x00"
_source_decoder = msgspec.json.Decoder(Source)


class SQLiteItemStore:
    """Semantic memory's items in a SQLite file (``":memory:"``: in memory, for tests).

    ``SQLiteItemStore(path)`` opens (creating the file if needed) at once; ``await
    SQLiteItemStore.open(path)`` does the same in a worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        with self._lock:
            found = self._db.execute("SELECT value FROM semantic_meta WHERE key = 'identity'")
            row = found.fetchone()
        #: Names this store's data (a snapshot of its vector index must be of the same).
        self.identity: str = row[0] if row else ""

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteItemStore:
        return await anyio.to_thread.run_sync(cls, path)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise StoreError(f"the semantic memory store {self.path!r} is closed")
                return fn(self._db)

        return await anyio.to_thread.run_sync(locked)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")  # the write lock up front: no upgrade deadlock
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._run(transaction)

    async def bind_model(self, model: str, dimensions: int) -> None:
        def bind(db: sqlite3.Connection) -> None:
            meta = dict(db.execute("SELECT key, value FROM semantic_meta").fetchall())
            if "model" not in meta:
                db.executemany(
                    "INSERT INTO semantic_meta VALUES (?, ?)",
                    [("model", model), ("dimensions", str(dimensions))],
                )
            elif (meta["model"], meta["dimensions"]) != (model, str(dimensions)):
                raise StoreError(
                    f"{self.path!r} holds vectors of {meta['model']} ({meta['dimensions']} "
                    f"dimensions), not {model} ({dimensions}): open it with that embedding "
                    "model, or use another file"
                )

        await self._write(bind)

    async def put(self, items: Sequence[MemoryItem], vectors: Sequence[Vector | None]) -> None:
        if len(items) != len(vectors):
            raise ValueError(f"put: {len(items)} items but {len(vectors)} vectors")
        rows = [_row(item, vector) for item, vector in zip(items, vectors, strict=True)]

        def put(db: sqlite3.Connection) -> None:
            for row, item in zip(rows, items, strict=True):
                before = db.execute(
                    "SELECT text FROM items WHERE tenant = ? AND id = ? AND embedded = 1",
                    (item.scope.tenant, item.id),
                ).fetchone()
                db.execute(
                    "INSERT INTO items (id, tenant, user, agent, text, digest, metadata, key,"
                    " valid_from, valid_to, recorded_at, updated_at, superseded_by, source,"
                    " accessed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (tenant, id) DO UPDATE SET user=excluded.user,"
                    " agent=excluded.agent, text=excluded.text, digest=excluded.digest,"
                    " metadata=excluded.metadata, key=excluded.key,"
                    " valid_from=excluded.valid_from, valid_to=excluded.valid_to,"
                    " recorded_at=excluded.recorded_at, updated_at=excluded.updated_at,"
                    " superseded_by=excluded.superseded_by, source=excluded.source,"
                    " accessed_at=excluded.accessed_at",
                    row[:-1],
                )
                _store_vector(db, item, row[-1], before is not None and before[0] == item.text)

        await self._write(put)

    async def set_vectors(self, entries: Sequence[tuple[str, str, Vector]]) -> list[str]:
        def store(db: sqlite3.Connection) -> list[str]:
            done = []
            for id_, text, vector in entries:
                rows = db.execute(
                    "UPDATE items SET embedded = 1 WHERE id = ? AND text = ? RETURNING rowid, tenant",
                    (id_, text),
                ).fetchall()
                for rowid, tenant in rows:
                    db.execute(
                        "INSERT OR REPLACE INTO vectors VALUES (?, ?)", (rowid, _blob(vector))
                    )
                    _log_change(db, tenant, id_)
                    done.append(id_)
            return done

        return await self._write(store)

    async def get(self, ids: Sequence[str], *, tenant: str) -> builtins.list[MemoryItem]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        query = f"SELECT {sql.COLUMNS} FROM items WHERE tenant = ? AND id IN ({marks})"
        return await self._read(query, [tenant, *ids])

    async def list(
        self, selection: Selection, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[MemoryItem]:
        clause, params = sql.where(selection)
        if after is not None:
            clause += " AND id > ?"
            params.append(after)
        query = f"SELECT {sql.COLUMNS} FROM items WHERE {clause} ORDER BY id LIMIT ?"
        return await self._read(query, [*params, limit])

    async def ids(self, selection: Selection, *, limit: int) -> builtins.list[str]:
        clause, params = sql.where(selection)

        def ids(db: sqlite3.Connection) -> builtins.list[str]:
            rows = db.execute(f"SELECT id FROM items WHERE {clause} LIMIT ?", [*params, limit])
            return [r[0] for r in rows]

        return await self._run(ids)

    async def keyword(
        self, query: str, selection: Selection, *, limit: int
    ) -> builtins.list[tuple[str, float]]:
        match = sql.fts_query(query)
        if not match:
            return []
        clause, params = sql.where(selection, prefix="i.")
        statement = (
            "SELECT i.id, -bm25(items_fts) AS score FROM items_fts"
            " JOIN items i ON i.rowid = items_fts.rowid"
            f" WHERE items_fts MATCH ? AND {clause} ORDER BY score DESC LIMIT ?"
        )

        def search(db: sqlite3.Connection) -> builtins.list[tuple[str, float]]:
            rows = db.execute(statement, [match, *params, limit]).fetchall()
            return [(r[0], float(r[1])) for r in rows]

        return await self._run(search)

    async def same(
        self,
        scope: Scope,
        *,
        key: str | None = None,
        digest: str | None = None,
        open_at: float | None = None,
    ) -> builtins.list[MemoryItem]:
        if key is None and digest is None:
            raise ValueError("same: give a key, a digest or both")
        parts = ["tenant = ?", "user IS ?", "agent IS ?"]
        params: builtins.list[Any] = [scope.tenant, scope.user, scope.agent]
        if open_at is None:
            parts.append("superseded_by IS NULL")
        else:
            parts.append("(superseded_by IS NULL OR valid_to > ?)")
            params.append(open_at)
        if key is not None:
            parts.append("key = ?")
            params.append(key)
        if digest is not None:
            parts.append("digest = ?")
            params.append(digest)
        query = f"SELECT {sql.COLUMNS} FROM items WHERE {' AND '.join(parts)} ORDER BY id"
        return await self._read(query, params)

    async def delete(self, ids: Sequence[str], *, tenant: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            count = 0
            for id_ in ids:
                gone = db.execute("DELETE FROM items WHERE tenant = ? AND id = ?", (tenant, id_))
                if gone.rowcount:
                    count += 1
                    _log_change(db, tenant, id_)
            return count

        return await self._write(delete)

    async def touch(self, ids: Sequence[str], *, tenant: str, at: float) -> None:
        def touch(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE items SET accessed_at = ? WHERE tenant = ? AND id = ?",
                [(at, tenant, id_) for id_ in ids],
            )

        await self._write(touch)

    async def unembedded(self, limit: int) -> builtins.list[MemoryItem]:
        query = f"SELECT {sql.COLUMNS} FROM items WHERE embedded = 0 ORDER BY rowid LIMIT ?"
        return await self._read(query, [limit])

    async def changes(self, since: int, limit: int) -> tuple[int, builtins.list[Change]]:
        def changes(db: sqlite3.Connection) -> tuple[int, builtins.list[Change]]:
            rows = db.execute(
                "SELECT c.seq, c.id, c.tenant, v.vector FROM changes c"
                " LEFT JOIN items i ON i.tenant = c.tenant AND i.id = c.id"
                " LEFT JOIN vectors v ON v.item = i.rowid"
                " WHERE c.seq > ? ORDER BY c.seq LIMIT ?",
                (since, limit),
            ).fetchall()
            found = [Change(seq, id_, tenant, vector) for seq, id_, tenant, vector in rows]
            return (found[-1].seq if found else since), found

        return await self._run(changes)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None  # type: ignore[assignment]

        await anyio.to_thread.run_sync(close)

    async def _read(self, query: str, params: Sequence[Any]) -> builtins.list[MemoryItem]:
        def read(db: sqlite3.Connection) -> builtins.list[MemoryItem]:
            return [_item(row) for row in db.execute(query, params)]

        return await self._run(read)


def _store_vector(
    db: sqlite3.Connection, item: MemoryItem, vector: bytes | None, still_valid: bool
) -> None:
    """After an upsert: store the given vector, else keep the old one only if it was made
    from the same text (``still_valid``), else drop it (the text must be embedded again)."""
    tenant = item.scope.tenant
    (rowid, embedded) = db.execute(
        "SELECT rowid, embedded FROM items WHERE tenant = ? AND id = ?", (tenant, item.id)
    ).fetchone()
    if vector is not None:
        db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (rowid, vector))
        db.execute("UPDATE items SET embedded = 1 WHERE rowid = ?", (rowid,))
        _log_change(db, tenant, item.id)
    elif embedded and not still_valid:
        db.execute("DELETE FROM vectors WHERE item = ?", (rowid,))
        db.execute("UPDATE items SET embedded = 0 WHERE rowid = ?", (rowid,))
        _log_change(db, tenant, item.id)


def _log_change(db: sqlite3.Connection, tenant: str, id_: str) -> None:
    db.execute("INSERT OR REPLACE INTO changes (tenant, id) VALUES (?, ?)", (tenant, id_))


def _blob(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _row(item: MemoryItem, vector: Vector | None) -> tuple[Any, ...]:
    scope = item.scope
    return (
        item.id,
        scope.tenant,
        scope.user,
        scope.agent,
        item.text,
        text_digest(item.text),
        msgspec.json.encode(item.metadata).decode(),
        item.key,
        item.valid_from,
        item.valid_to,
        item.recorded_at,
        item.updated_at,
        item.superseded_by,
        None if item.source is None else msgspec.json.encode(item.source).decode(),
        item.accessed_at,
        None if vector is None else _blob(vector),
    )


def _item(row: Sequence[Any]) -> MemoryItem:
    (id_, tenant, user, agent, text, metadata, key, valid_from, valid_to, recorded_at) = row[:10]
    updated_at, superseded_by, source, accessed_at, indexed = row[10:]
    return MemoryItem(
        id=id_,
        text=text,
        scope=Scope(tenant, user, agent),
        metadata=msgspec.json.decode(metadata),
        key=key,
        valid_from=valid_from,
        valid_to=valid_to,
        recorded_at=recorded_at,
        updated_at=updated_at,
        superseded_by=superseded_by,
        source=None if source is None else _source_decoder.decode(source),
        indexed=bool(indexed),
        accessed_at=accessed_at,
    )


def _connect(path: str) -> sqlite3.Connection:
    memory = path == ":memory:"
    file = Path(path)
    if not memory and file.exists() and file.stat().st_size:
        with file.open("rb") as f:
            if f.read(16) != _HEADER:
                raise NotAStoreError(f"{path!r} is not a SQLite file; it was left untouched")
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        _prepare(db, path, memory)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: str, memory: bool) -> None:
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if not memory:
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript("BEGIN;" + sql.SCHEMA + "COMMIT;")
            db.executemany(
                "INSERT INTO semantic_meta VALUES (?, ?)",
                [
                    ("kind", sql.KIND),
                    ("schema", str(sql.SCHEMA_VERSION)),
                    ("identity", uuid.uuid4().hex),
                ],
            )
        meta = (
            dict(db.execute("SELECT key, value FROM semantic_meta").fetchall())
            if "semantic_meta" in tables or not tables
            else {}
        )
    except sqlite3.DatabaseError as exc:
        raise NotAStoreError(
            f"{path!r} cannot be read as a semantic memory ({exc}): it is corrupt or not "
            "a database; it was left untouched"
        ) from exc
    if meta.get("kind") != sql.KIND:
        raise NotAStoreError(
            f"{path!r} is a SQLite database of something else (no semantic memory in it); "
            "it was left untouched: give semantic memory a file of its own"
        )
    if int(meta.get("schema", "0")) > sql.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path!r} was written by a newer Mainspring (semantic memory schema "
            f"{meta['schema']}, this one knows {sql.SCHEMA_VERSION}); upgrade Mainspring"
        )
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
