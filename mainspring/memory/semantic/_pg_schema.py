"""Semantic memory's tables on PostgreSQL, created idempotently under an advisory lock.

They live in the schema of the URL, beside the journal's tables (one URL serves both),
named ``{prefix}items`` and ``{prefix}changes``. The schema is first brought to the
journal store's version (``store/_pg_schema.migrate``): that is what marks it as
Mainspring's, so a journal store opened on it later finds it in order, and a foreign
schema is refused untouched. Our own version is the ``{prefix}version`` key of its
``meta`` table.

``items``: one row per item. The vector is float32 bytes (pgvector is not packaged
here, and search runs in each process's in-memory index anyway); ``tsv`` is the
generated ``tsvector`` of the text, with a GIN index, for keyword search.

``changes``: the change feed that keeps every process's vector index current. One row
per item (tenant and id) whose vector changed (written, cleared or deleted), numbered from a
sequence; a later change of the same item renumbers its row, so the feed holds at
most one row per item and reading it from 0 rebuilds an index. Writers number their changes
under a transaction-scoped advisory lock, so change numbers commit in order: a reader
that has seen change n never meets a change below n committing later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import SchemaVersionError
from ...store._pg_schema import migrate as migrate_store
from ...store._pg_schema import quote_ident
from ...store._pg_url import Target

if TYPE_CHECKING:
    from ...store._pg_pool import Connection

VERSION: Final = 1
LOCK_CLASS: Final = 0x4D4D  # "MM": the first key of semantic memory's advisory locks
TEXT_SEARCH: Final = "english"  # the text search configuration of tsv and of queries

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"""CREATE TABLE {{s}}.{{p}}items (
            tenant        text COLLATE "C" NOT NULL,
            id            text COLLATE "C" NOT NULL,
            user_id       text COLLATE "C",
            agent         text COLLATE "C",
            text          text NOT NULL,
            metadata      jsonb NOT NULL DEFAULT '{{{{}}}}',
            key           text COLLATE "C",
            valid_from    float8,
            valid_to      float8,
            recorded_at   float8 NOT NULL,
            updated_at    float8 NOT NULL,
            accessed_at   float8,
            superseded_by text COLLATE "C",
            source        jsonb,
            digest        text COLLATE "C" NOT NULL,
            vector        bytea,
            tsv           tsvector GENERATED ALWAYS AS
                            (to_tsvector('{TEXT_SEARCH}'::regconfig, text)) STORED,
            PRIMARY KEY (tenant, id)
        )""",
        "CREATE INDEX {p}items_scope ON {s}.{p}items (tenant, user_id, agent, id)",
        # De-duplication and contradiction look up live items by key and by text digest.
        "CREATE INDEX {p}items_key ON {s}.{p}items (tenant, key)"
        " WHERE key IS NOT NULL AND superseded_by IS NULL",
        "CREATE INDEX {p}items_digest ON {s}.{p}items (tenant, digest) WHERE superseded_by IS NULL",
        "CREATE INDEX {p}items_unembedded ON {s}.{p}items (recorded_at, id) WHERE vector IS NULL",
        "CREATE INDEX {p}items_tsv ON {s}.{p}items USING gin (tsv)",
        "CREATE SEQUENCE {s}.{p}change_numbers",
        """CREATE TABLE {s}.{p}changes (
            tenant text COLLATE "C" NOT NULL,
            id     text COLLATE "C" NOT NULL,
            seq    bigint NOT NULL UNIQUE,
            PRIMARY KEY (tenant, id)
        )""",
    ),
)
assert len(_MIGRATIONS) == VERSION


async def migrate(conn: Connection, target: Target, prefix: str) -> None:
    """Bring our tables to VERSION; concurrent callers wait on the lock and find it done."""
    await migrate_store(conn, target)
    s = quote_ident(target.schema)
    version_key = f"{prefix}version"
    if await _version(conn, s, version_key) == VERSION:
        return
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            LOCK_CLASS,
            f"{target.schema}.{prefix}",
        )
        version = await _version(conn, s, version_key)
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement.format(s=s, p=prefix))
        await conn.execute(
            f"INSERT INTO {s}.meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            version_key,
            str(VERSION),
        )


async def _version(conn: Connection, s: str, key: str) -> int:
    value = await conn.fetchval(f"SELECT value FROM {s}.meta WHERE key = $1", key)
    if value is None:
        return 0
    version = int(value)
    if version > VERSION:
        raise _newer(key, version)
    return version


def _newer(key: str, version: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"semantic memory tables ({key}={version}) were written by a newer Mainspring "
        f"(this one knows up to {VERSION}); they were left untouched; upgrade Mainspring"
    )
