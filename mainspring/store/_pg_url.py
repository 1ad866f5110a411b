"""The PostgreSQL store's URL: our options split off, the rest left to asyncpg.

``postgresql://user:password@host:port/db?schema=name&retry_for=30&min_size=2&max_size=10&batch_window=0.002&call_timeout=10``
asyncpg would send query parameters it does not know to the server as settings,
so ours are removed before the URL reaches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import StoreError

N = TypeVar("N", int, float)

OUR_PARAMS = ("schema", "retry_for", "min_size", "max_size", "batch_window", "call_timeout")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store connects, for error messages (never the password)."""

    host: str
    port: int
    database: str
    user: str
    schema: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    dsn: str  # for asyncpg: the URL without our options
    options: dict[str, str]  # ours, as text
    driver_params: frozenset[str]  # the query parameters left for asyncpg
    target: Target


def parse_url(url: str, schema: str | None) -> ParsedUrl:
    """Split our options off the URL; asyncpg would send unknown ones to the server."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_PARAMS}
    theirs = [(k, v) for k, v in query if k not in OUR_PARAMS]
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(theirs)))
    user = unquote(parts.username or "") or "postgres"
    try:
        port = parts.port or 5432
    except ValueError:
        raise StoreError(f"invalid port in the store URL {redact(url)!r}; use a number") from None
    target = Target(
        host=parts.hostname or "localhost",
        port=port,
        database=unquote(parts.path.lstrip("/")) or user,
        user=user,
        schema=check_schema_name(schema or ours.get("schema") or "mainspring"),
    )
    return ParsedUrl(dsn, ours, frozenset(k for k, _ in theirs), target)


def option(
    params: dict[str, str],
    name: str,
    given: N | None,
    kind: type[N],
    default: N,
    *,
    positive: bool = False,
) -> N:
    """An option's value: ``given``, else the URL's, else ``default``; never negative, and
    above zero if ``positive``."""
    if given is not None:
        value = given
    else:
        try:
            value = kind(params.get(name, default))
        except ValueError:
            raise StoreError(
                f"invalid {name}={params[name]!r} in the store URL; use a number"
            ) from None
    if value < 0 or (positive and not value > 0):
        raise StoreError(
            f"invalid {name}={value!r} for the PostgreSQL store; use a positive number"
        )
    return value


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StoreError(
            f"invalid schema name {schema!r} in the store URL; use letters, digits and "
            "underscores, starting with a letter or underscore (at most 63)"
        )
    return schema
