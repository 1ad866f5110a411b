"""SQL of the PostgreSQL item store: statements, selection and filter clauses, rows to items.

Queries are built per call with only the clauses they need (a given user, a cursor,
filters), so that each shape gets a plan that uses the scope index; asyncpg caches the
prepared statement of each shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import numpy as np

from ...store._pg_schema import quote_ident
from ..scope import Scope
from ._pg_schema import TEXT_SEARCH
from .filters import Condition, Filters
from .items import MemoryItem, Source, text_digest
from .protocols import Selection, Vector

_JSON = msgspec.json.Encoder()
_METADATA = msgspec.json.Decoder(dict[str, Any])
_SOURCE = msgspec.json.Decoder(Source)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped U+0000 in JSON text
_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

ITEM_COLUMNS = (
    "id, tenant, user_id, agent, text, metadata::text, key, valid_from, valid_to,"
    " recorded_at, updated_at, accessed_at, superseded_by, source::text, vector IS NOT NULL"
)
# The columns put writes, in the order of item_columns().
PUT_COLUMNS = (
    "id, tenant, user_id, agent, text, metadata, key, valid_from, valid_to, recorded_at,"
    " updated_at, accessed_at, superseded_by, source, digest, vector"
)


@dataclass(slots=True)
class Query:
    """A WHERE clause being built, and the arguments its ``$n`` placeholders stand for."""

    args: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def arg(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def selection(self, selection: Selection) -> None:
        scope = selection.scope
        self.where.append(f"tenant = {self.arg(scope.tenant, 'text')}")
        if scope.user is not None:
            self.where.append(f"user_id = {self.arg(scope.user, 'text')}")
        if scope.agent is not None:
            self.where.append(f"agent = {self.arg(scope.agent, 'text')}")
        if selection.live_only and selection.valid_at is None:
            self.where.append("superseded_by IS NULL")
        elif selection.live_only:  # or its successor has not started yet (see protocols)
            at = self.arg(selection.valid_at, "float8")
            self.where.append(f"(superseded_by IS NULL OR valid_to > {at})")
        if selection.valid_at is not None:
            at = self.arg(selection.valid_at, "float8")
            self.where.append(
                f"coalesce(valid_from, recorded_at) <= {at} AND (valid_to IS NULL OR valid_to > {at})"
            )
        self.filters(selection.filters)

    def exact_scope(self, scope: Scope) -> None:
        """The scope matched exactly: a None user or agent is a NULL column."""
        self.where.append(f"tenant = {self.arg(scope.tenant, 'text')}")
        for column, value in (("user_id", scope.user), ("agent", scope.agent)):
            if value is None:
                self.where.append(f"{column} IS NULL")
            else:
                self.where.append(f"{column} = {self.arg(value, 'text')}")

    def filters(self, conditions: Filters) -> None:
        for c in conditions:
            self.where.append(self._condition(c))

    def _condition(self, c: Condition) -> str:
        # jsonb equality is filters.holds' equality: 1 = 1.0, true is not 1, and a missing
        # key (NULL) is equal to nothing, so only IS DISTINCT FROM ($ne) holds for it.
        key = self.arg(c.key, "text")
        stored = f"(metadata -> {key})"
        if c.op == "eq":
            return f"{stored} = {self.arg(_json(c.value), 'jsonb')}"
        if c.op == "ne":
            return f"{stored} IS DISTINCT FROM {self.arg(_json(c.value), 'jsonb')}"
        if c.op == "in":
            assert isinstance(c.value, tuple)
            return f"{stored} = ANY({self.arg([_json(v) for v in c.value], 'jsonb[]')})"
        compare = _COMPARE[c.op]
        if isinstance(c.value, str):  # by code point, like Python, whatever the locale
            return (
                f"(jsonb_typeof({stored}) = 'string'"
                f' AND (metadata ->> {key}) COLLATE "C" {compare} {self.arg(c.value, "text")})'
            )
        return (
            f"(jsonb_typeof({stored}) = 'number'"
            f" AND {stored} {compare} {self.arg(_json(c.value), 'jsonb')})"
        )

    @property
    def clause(self) -> str:
        return " AND ".join(self.where) or "true"


def _json(value: Any) -> str:
    return _JSON.encode(value).decode()


# A query matches items with any of its words (plainto_tsquery would ask for all of
# them: a question rarely repeats every word of the fact that answers it), less the
# words common in the table (``common``: the lexemes PostgreSQL's statistics find in
# over COMMON_ABOVE of the rows, see ``common_lexemes_sql``), which would make every
# query rank a large part of the table while adding little to the ranking (BM25 gives
# them almost no weight); a query of common words only keeps them all. Each lexeme is
# quoted for tsquery input (a quote doubled, a backslash escaped).
_QUOTED = r"'''' || replace(replace(l, '\', '\\'), '''', '''''') || ''''"


def any_word_query(text: str, common: str) -> str:
    lexemes = f"unnest(tsvector_to_array(to_tsvector('{TEXT_SEARCH}', {text})))"
    return (
        f"(SELECT coalesce(string_agg({_QUOTED}, ' | '), '')::tsquery FROM {lexemes} AS l"
        f" WHERE l <> ALL({common})"
        f" OR NOT EXISTS (SELECT 1 FROM {lexemes} AS r WHERE r <> ALL({common})))"
    )


COMMON_ABOVE = 0.01  # a lexeme in over 1% of the rows is left out of keyword queries


# The items' common lexemes ($1 schema, $2 table), from the statistics that ANALYZE
# (autovacuum) keeps; the frequencies run three entries past the lexemes (min, max, nulls).
COMMON_LEXEMES = f"""
    SELECT coalesce(array_agg(e), '{{}}') FROM pg_stats,
        unnest(most_common_elems::text::text[], most_common_elem_freqs) AS u(e, f)
    WHERE schemaname = $1 AND tablename = $2 AND attname = 'tsv'
      AND e IS NOT NULL AND f > {COMMON_ABOVE}
"""


def item_from_row(row: asyncpg.Record) -> MemoryItem:
    source = row[13]
    return MemoryItem(
        id=row[0],
        scope=Scope(row[1], row[2], row[3]),
        text=row[4],
        metadata=_METADATA.decode(row[5]),
        key=row[6],
        valid_from=row[7],
        valid_to=row[8],
        recorded_at=row[9],
        updated_at=row[10],
        accessed_at=row[11],
        superseded_by=row[12],
        source=None if source is None else _SOURCE.decode(source),
        indexed=row[14],
    )


def item_columns(
    items: Sequence[MemoryItem], vectors: Sequence[Vector | None]
) -> tuple[list[Any], ...]:
    """The column arrays that ``put``'s ``unnest`` takes, one list per column."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(16))
    for item, vector in zip(items, vectors, strict=True):
        scope = item.scope
        row = (
            item.id,
            scope.tenant,
            scope.user,
            scope.agent,
            item.text,
            _json(item.metadata),
            item.key,
            item.valid_from,
            item.valid_to,
            item.recorded_at,
            item.updated_at,
            item.accessed_at,
            item.superseded_by,
            None if item.source is None else _json(item.source),
            text_digest(item.text),
            None if vector is None else vector_bytes(vector),
        )
        if any(isinstance(v, str) and "\x00" in v for v in row) or any(
            v is not None and _JSON_NUL.search(v) for v in (row[5], row[13])
        ):
            raise _nul_error(item)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _nul_error(item: MemoryItem) -> ValueError:
    # PostgreSQL's text and jsonb cannot hold U+0000 (SQLite can; the check is here so
    # that the error names the item instead of failing the whole batch in the server).
    return ValueError(
        f"item {item.id!r} has a NUL character (U+0000) in its text, id, scope, key, "
        "metadata or source, which PostgreSQL cannot store; remove it"
    )


def vector_bytes(vector: Vector) -> bytes:
    """float32, little-endian: the change feed's format."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


@dataclass(frozen=True, slots=True)
class Statements:
    """The fixed statements of one schema and table prefix."""

    lock_existing: str
    put: str
    set_vectors: str
    changed: str
    get: str
    delete: str
    touch: str
    unembedded: str
    changes: str
    items: str  # the qualified items table, for the statements built per call
    meta: str
    lock_key: str  # the advisory lock that orders change numbers
    notify_payload: str  # what NOTIFY says: whose tables changed


def statements(schema: str, prefix: str) -> Statements:
    s = quote_ident(schema)
    items, changes = f"{s}.{prefix}items", f"{s}.{prefix}changes"
    numbers = f"{s}.{prefix}change_numbers"
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}"
        for c in PUT_COLUMNS.split(", ")[2:-1]  # all but the key (id, tenant) and vector
    )
    casts = (
        "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
        " $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[],"
        " $13::text[], $14::text[], $15::text[], $16::bytea[]"
    )
    return Statements(
        # Locks the rows a put replaces (in id order) and says what they held.
        lock_existing=f"""
            SELECT tenant, id, text, vector IS NOT NULL FROM {items}
            WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
            ORDER BY tenant, id FOR UPDATE
        """,
        put=f"""
            INSERT INTO {items} AS old ({PUT_COLUMNS})
            SELECT id, tenant, user_id, agent, text, metadata::jsonb, key, valid_from, valid_to,
                   recorded_at, updated_at, accessed_at, superseded_by, source::jsonb, digest,
                   vector
            FROM unnest({casts}) AS t({PUT_COLUMNS})
            ON CONFLICT (tenant, id) DO UPDATE SET {updates},
                vector = CASE WHEN EXCLUDED.vector IS NOT NULL THEN EXCLUDED.vector
                              WHEN old.text = EXCLUDED.text THEN old.vector END
        """,
        set_vectors=f"""
            UPDATE {items} AS i SET vector = t.vector
            FROM unnest($1::text[], $2::text[], $3::bytea[]) AS t(id, text, vector)
            WHERE i.id = t.id AND i.text = t.text
            RETURNING i.tenant, i.id
        """,
        changed=f"""
            INSERT INTO {changes} (tenant, id, seq)
            SELECT tenant, id, nextval('{numbers}')
            FROM unnest($1::text[], $2::text[]) AS t(tenant, id) ORDER BY tenant, id
            ON CONFLICT (tenant, id) DO UPDATE SET seq = EXCLUDED.seq
        """,
        get=f"SELECT {ITEM_COLUMNS} FROM {items} WHERE id = ANY($1::text[]) AND tenant = $2",
        delete=f"""
            DELETE FROM {items} WHERE id = ANY($1::text[]) AND tenant = $2 RETURNING tenant, id
        """,
        touch=f"UPDATE {items} SET accessed_at = $3 WHERE id = ANY($1::text[]) AND tenant = $2",
        unembedded=f"""
            SELECT {ITEM_COLUMNS} FROM {items} WHERE vector IS NULL
            ORDER BY recorded_at, id LIMIT $1
        """,
        changes=f"""
            SELECT c.seq, c.id, c.tenant, i.vector
            FROM {changes} c LEFT JOIN {items} i ON i.tenant = c.tenant AND i.id = c.id
            WHERE c.seq > $1 ORDER BY c.seq LIMIT $2
        """,
        items=items,
        meta=f"{s}.meta",
        lock_key=f"{schema}.{prefix}changes",
        notify_payload=f"{schema}.{prefix}",
    )
