"""How deep a JSON value nests: refused on the way in, clipped on the way out.

A value nested a few hundred levels deep is valid JSON, but the encoders the answers go
through stop at about 255 levels (orjson, pydantic-core). A run holding one would fail
every page that shows it, so the API refuses values nested deeper than ``MAX_JSON_DEPTH``
(422 naming the field), and renders the ones already stored (written through the Python
API) clipped at that depth rather than failing (docs/server.md, "Limits").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

#: The deepest a request's JSON value may nest (``[]`` and ``{}`` are one level).
MAX_JSON_DEPTH = 64

#: What stands in for a part of a stored value nested deeper than the limit.
CLIPPED = f"<nested deeper than {MAX_JSON_DEPTH} levels: not shown>"


def _children(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.__dict__.values()
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, list | tuple):
        return value
    return None


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests deeper than ``limit`` levels (a walk with its own stack, so
    a value deeper than Python's recursion limit is measured too)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = _children(item)
        if children is None:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_json_depth(value: Any) -> Any:
    """A pydantic ``AfterValidator``: ``value`` unchanged, or ValueError if nested deeper
    than ``MAX_JSON_DEPTH`` (pydantic makes it a 422 naming the field)."""
    if too_deep(value):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels; flatten the value")
    return value


def clip(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """``value`` as it is if it nests at most ``limit`` levels; else a copy whose parts
    deeper than that are ``CLIPPED`` (for values stored before they were refused)."""
    if not too_deep(value, limit):
        return value
    return _clipped(value, limit)


def _clipped(value: Any, left: int) -> Any:
    if left <= 0:
        return CLIPPED if _children(value) is not None else value
    if isinstance(value, BaseModel):
        value = value.__dict__
    if isinstance(value, dict):
        return {k: _clipped(v, left - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clipped(v, left - 1) for v in value]
    return value
