"""SQL of the SQLite item store: the schema, and a Selection as a WHERE clause."""

from __future__ import annotations

import re
from typing import Any, Final

from .filters import Condition, Scalar
from .protocols import Selection

SCHEMA_VERSION = 1
KIND = "mainspring-semantic-memory"

SCHEMA = """
CREATE TABLE semantic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    user TEXT,
    agent TEXT,
    text TEXT NOT NULL,
    digest TEXT NOT NULL,
    metadata TEXT NOT NULL,
    key TEXT,
    valid_from REAL,
    valid_to REAL,
    recorded_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    superseded_by TEXT,
    source TEXT,
    accessed_at REAL,
    embedded INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, id)
);
-- Vectors beside the items, not in them: a 1.5 KB blob per row would spill every item
-- onto overflow pages and make each scan (filters, lists) read them all.
CREATE TABLE vectors (item INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE INDEX items_key ON items (tenant, key) WHERE key IS NOT NULL;
CREATE INDEX items_digest ON items (tenant, digest);
CREATE INDEX items_unembedded ON items (rowid) WHERE embedded = 0;
-- One row per item whose vector changed (REPLACE gives it a new, higher seq): the
-- feed every process keeps its vector index current from; deleted items stay as
-- tombstones (no matching row in items).
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    UNIQUE (tenant, id)
);
CREATE VIRTUAL TABLE items_fts USING fts5 (
    text, content='items', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
    INSERT INTO items_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    DELETE FROM vectors WHERE item = old.rowid;
END;
CREATE TRIGGER items_au AFTER UPDATE OF text ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO items_fts (rowid, text) VALUES (new.rowid, new.text);
END;
"""

COLUMNS = (
    "id, tenant, user, agent, text, metadata, key, valid_from, valid_to, recorded_at, "
    "updated_at, superseded_by, source, accessed_at, embedded"
)

_WORD = re.compile(r"\w+")


# English function words: in a query they match nearly every row, so BM25 would score the
# whole table for them (a hybrid search over 100k items took ~150 ms with them in).
_STOPWORDS_TEXT: Final = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
"""
STOPWORDS: Final = frozenset(_STOPWORDS_TEXT.split())


def fts_query(text: str) -> str:
    """Plain text as an FTS5 query: every word quoted (no query syntax), any may match;
    function words left out unless the query has nothing else."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text))
    content = [w for w in words if w not in STOPWORDS] or list(words)
    return " OR ".join(f'"{w}"' for w in content)


def where(selection: Selection, prefix: str = "") -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) of a selection, and its parameters."""
    p = prefix
    scope = selection.scope
    parts = [f"{p}tenant = ?"]
    params: list[Any] = [scope.tenant]
    if scope.user is not None:
        parts.append(f"{p}user = ?")
        params.append(scope.user)
    if scope.agent is not None:
        parts.append(f"{p}agent = ?")
        params.append(scope.agent)
    if selection.live_only and selection.valid_at is None:
        parts.append(f"{p}superseded_by IS NULL")
    elif selection.live_only:  # or its successor has not started yet (see protocols)
        parts.append(f"({p}superseded_by IS NULL OR {p}valid_to > ?)")
        params.append(selection.valid_at)
    if selection.valid_at is not None:
        parts.append(
            f"coalesce({p}valid_from, {p}recorded_at) <= ? "
            f"AND ({p}valid_to IS NULL OR {p}valid_to > ?)"
        )
        params += [selection.valid_at, selection.valid_at]
    for condition in selection.filters:
        sql, args = _condition(condition, f"{p}metadata")
        parts.append(sql)
        params += args
    return " AND ".join(parts), params


def _condition(c: Condition, column: str) -> tuple[str, list[Any]]:
    path = f'$."{c.key}"'
    if c.op == "eq":
        return _equal(column, path, c.value)  # type: ignore[arg-type]
    if c.op == "ne":
        sql, args = _equal(column, path, c.value)  # type: ignore[arg-type]
        return f"NOT {sql}", args
    if c.op == "in":
        values: tuple[Scalar, ...] = c.value  # type: ignore[assignment]
        if not values:
            return "0", []
        pieces = [_equal(column, path, v) for v in values]
        return "(" + " OR ".join(s for s, _ in pieces) + ")", [
            a for _, args in pieces for a in args
        ]
    op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[c.op]
    kinds = "('text')" if isinstance(c.value, str) else "('integer', 'real')"
    return (
        f"(coalesce(json_type({column}, ?), '') IN {kinds} AND json_extract({column}, ?) {op} ?)",
        [path, path, c.value],
    )


def _equal(column: str, path: str, value: Scalar) -> tuple[str, list[Any]]:
    # Never NULL (a missing key gives '' as its type), so NOT of it is exact.
    kind = f"coalesce(json_type({column}, ?), '')"
    if isinstance(value, bool):
        return f"({kind} = '{'true' if value else 'false'}')", [path]
    if isinstance(value, str):
        return f"({kind} = 'text' AND json_extract({column}, ?) = ?)", [path, path, value]
    return f"({kind} IN ('integer', 'real') AND json_extract({column}, ?) = ?)", [path, path, value]
