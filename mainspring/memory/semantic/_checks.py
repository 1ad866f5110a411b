"""Semantic memory's input checks: a clear error saying what to fix, before any write."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ..scope import Scope
from .filters import parse_filters
from .items import MemoryItem, NewItem, Source
from .protocols import Selection

MAX_LIMIT = 1000
MODES = ("hybrid", "vector", "keyword")


def new_id() -> str:
    """A fresh item id that sorts by creation time (list() pages in id order)."""
    return f"{time.time_ns():016x}{os.urandom(5).hex()}"


def text(value: Any, what: str = "text") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty; give the fact or passage to remember")
    return value


def scope(value: Any) -> Scope:
    if not isinstance(value, Scope):
        raise TypeError(
            f"scope must be a mainspring.memory.Scope, got {type(value).__name__} "
            "(e.g. Scope(tenant='acme', user='u1'))"
        )
    return value


def tenant(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"tenant must be a str, got {type(value).__name__}")
    return value


def metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError("metadata must be a mapping with str keys")
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"metadata must be JSON data: {exc}") from exc
    return dict(value)


def optional_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str or None, got {value!r}")
    return value


def time_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{what} must be epoch seconds (a finite number) or None, got {value!r}")
    return float(value)


def source(value: Any) -> Source | None:
    if value is not None and not isinstance(value, Source):
        raise TypeError(f"source must be a semantic.Source or None, got {type(value).__name__}")
    return value


def limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be an int in 1..{MAX_LIMIT}, got {value!r}")
    return value


def mode(value: Any) -> str:
    if value not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {value!r}")
    return str(value)


def selection(
    where: Scope, filters: Mapping[str, Any] | None, as_of: float | None, superseded: bool
) -> Selection:
    """What a search or list may see: current items by default; ``as_of``: those valid
    then (superseded or not); ``superseded``: every version, any time."""
    at = time_or_none(as_of, "as_of")
    where, conditions = scope(where), parse_filters(filters)
    if at is not None:
        return Selection(where, conditions, live_only=False, valid_at=at)
    if superseded:
        return Selection(where, conditions, live_only=False, valid_at=None)
    return Selection(where, conditions, live_only=True, valid_at=time.time())


def new_item(entry: str | NewItem, where: Scope, now: float) -> MemoryItem:
    if isinstance(entry, str):
        entry = NewItem(entry)
    if not isinstance(entry, NewItem):
        raise TypeError(f"add_many takes str or NewItem entries, got {type(entry).__name__}")
    return MemoryItem(
        id=optional_str(entry.id, "id") or new_id(),
        text=text(entry.text),
        scope=where,
        metadata=metadata(entry.metadata),
        key=optional_str(entry.key, "key"),
        valid_from=time_or_none(entry.valid_from, "valid_from"),
        recorded_at=now,
        updated_at=now,
        source=source(entry.source),
    )
