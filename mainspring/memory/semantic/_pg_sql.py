"""SQL of the PostgreSQL item store: statements, scope and filter clauses, rows to items.

Queries are built per call with only the clauses they need (a given user, a cursor,
filters), so that each shape gets a plan that uses the scope index; asyncpg caches the
prepared statement of each shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import numpy as np

from ..scope import Scope
from ._pg_schema import TEXT_SEARCH
from .filters import RANGE_OPS, Condition
from .items import MemoryItem, Source
from .protocols import Vector

_JSON = msgspec.json.Encoder()
_METADATA = msgspec.json.Decoder(dict[str, Any])
_SOURCE = msgspec.json.Decoder(Source)
_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

ITEM_COLUMNS = (
    "id, tenant, user_id, agent, text, metadata::text, key, valid_from, valid_to,"
    " recorded_at, updated_at, accessed_at, superseded_by, source::text, indexed"
)


@dataclass(slots=True)
class Query:
    """A WHERE clause being built, and the arguments its ``$n`` placeholders stand for."""

    args: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def arg(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def scope(self, scope: Scope) -> None:
        self.where.append(f"tenant = {self.arg(scope.tenant, 'text')}")
        if scope.user is not None:
            self.where.append(f"user_id = {self.arg(scope.user, 'text')}")
        if scope.agent is not None:
            self.where.append(f"agent = {self.arg(scope.agent, 'text')}")

    def filters(self, conditions: Sequence[Condition]) -> None:
        for c in conditions:
            self.where.append(self._condition(c))

    def _condition(self, c: Condition) -> str:
        key = self.arg(c.field, "text")
        # An absent field reads as JSON null, as in filters.matches.
        value = f"coalesce(metadata -> {key}, 'null'::jsonb)"
        if c.op == "eq":
            return f"{value} = {self.arg(_json(c.value), 'jsonb')}"
        if c.op == "ne":
            return f"{value} <> {self.arg(_json(c.value), 'jsonb')}"
        if c.op == "in":
            return f"{value} = ANY({self.arg([_json(v) for v in c.value], 'jsonb[]')})"
        assert c.op in RANGE_OPS
        compare = _COMPARE[c.op]
        if isinstance(c.value, str):  # by code point, like Python, whatever the locale
            return (
                f"(jsonb_typeof(metadata -> {key}) = 'string'"
                f' AND (metadata ->> {key}) COLLATE "C" {compare} {self.arg(c.value, "text")})'
            )
        return (
            f"(jsonb_typeof(metadata -> {key}) = 'number'"
            f" AND (metadata -> {key}) {compare} {self.arg(_json(c.value), 'jsonb')})"
        )

    @property
    def clause(self) -> str:
        return " AND ".join(self.where) or "true"


def _json(value: Any) -> str:
    return _JSON.encode(value).decode()


# A query matches items with any of its words (plainto_tsquery would ask for all of them:
# a question rarely repeats every word of the fact that answers it). plainto_tsquery
# quotes each lexeme, so the '&' between them are the only ones left outside quotes.
def any_word_query(arg: str) -> str:
    return f"replace(plainto_tsquery('{TEXT_SEARCH}', {arg})::text, ' & ', ' | ')::tsquery"


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
            item.indexed,
            None if vector is None else vector_bytes(vector),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def vector_bytes(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_from(data: bytes | None) -> Vector | None:
    if data is None:
        return None
    return np.frombuffer(data, dtype="<f4").astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class Statements:
    """The fixed statements of one schema and table prefix."""

    put: str
    changed: str
    notify_payload: str
    get: str
    delete: str
    changes: str
    items: str  # the qualified items table, for the statements built per call
    lock_key: str  # the advisory lock that orders change numbers


def statements(schema: str, prefix: str) -> Statements:
    from ...store._pg_schema import quote_ident

    s = quote_ident(schema)
    items, changes, seq = (
        f"{s}.{prefix}items",
        f"{s}.{prefix}changes",
        f"{s}.{prefix}change_numbers",
    )
    names = (
        "id, tenant, user_id, agent, text, metadata, key, valid_from, valid_to,"
        " recorded_at, updated_at, accessed_at, superseded_by, source, indexed, vector"
    )
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}"
        for c in names.split(", ")[2:-1]  # all but id, tenant (fixed) and vector (below)
    )
    put = f"""
        INSERT INTO {items} AS old ({names})
        SELECT id, tenant, user_id, agent, text, metadata::jsonb, key, valid_from, valid_to,
               recorded_at, updated_at, accessed_at, superseded_by, source::jsonb, indexed, vector
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::float8[],
                    $12::float8[], $13::text[], $14::text[], $15::bool[], $16::bytea[])
             AS t({names})
        ON CONFLICT (id) DO UPDATE SET {updates},
            vector = CASE WHEN EXCLUDED.vector IS NOT NULL THEN EXCLUDED.vector
                          WHEN EXCLUDED.indexed THEN old.vector END
        WHERE old.tenant = EXCLUDED.tenant  -- an id never moves to another tenant
        RETURNING id
    """
    changed = f"""
        INSERT INTO {changes} (id, seq) SELECT id, nextval('{seq}') FROM unnest($1::text[]) AS id
        ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq
    """
    return Statements(
        put=put,
        changed=changed,
        notify_payload=f"{schema}.{prefix}",
        get=f"SELECT {ITEM_COLUMNS} FROM {items} WHERE id = ANY($1::text[]) AND tenant = $2",
        delete=f"DELETE FROM {items} WHERE id = ANY($1::text[]) AND tenant = $2 RETURNING id",
        changes=f"""
            SELECT c.seq, c.id, i.vector FROM {changes} c LEFT JOIN {items} i ON i.id = c.id
            WHERE c.seq > $1 ORDER BY c.seq LIMIT $2
        """,
        items=items,
        lock_key=f"{schema}.{prefix}changes",
    )
