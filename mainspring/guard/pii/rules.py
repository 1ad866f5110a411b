"""What a redactor does where: kinds of data, fields scanned, skipped or masked, and the
values allowed through; one :class:`Rule` by default and one per effect name pattern.

Field paths are dotted keys from the top of what is redacted: an effect is seen as
``{"args": ..., "result": ..., "error": ...}`` (so ``args.to``, ``result.customer.email``),
an exported record as itself. List items share their list's path. A pattern without a
dot names a field at any depth (``email``); ``*`` matches one key (``result.*.phone``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Final

from .detect import KINDS, check_kinds

MASKED: Final = "[redacted]"


@dataclass(frozen=True)
class Rule:
    """``kinds``: what is looked for (default: every kind); ``only``: the fields scanned
    (None: all); ``skip``: fields never touched; ``mask``: fields replaced whole by
    ``[redacted]`` whatever they hold; ``fields``: other kinds for some fields
    (``{"notes": ("email", "phone")}``); ``allow``: found values kept (exact strings, or
    compiled patterns that must match the whole value: ``re.compile(r".*@acme\\.com")``)."""

    kinds: Collection[str] = KINDS
    only: Collection[str] | None = None
    skip: Collection[str] = ()
    mask: Collection[str] = ()
    fields: Mapping[str, Collection[str]] = field(default_factory=dict)
    allow: Iterable[str | re.Pattern[str]] = ()

    def __post_init__(self) -> None:
        check_kinds(self.kinds)
        for name, kinds in self.fields.items():
            try:
                check_kinds(kinds)
            except ValueError as exc:
                raise ValueError(f"Rule(fields={{{name!r}: ...}}): {exc}") from None
        object.__setattr__(self, "allow", tuple(self.allow))

    @cached_property
    def _allowed(self) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
        exact = frozenset(a for a in self.allow if isinstance(a, str))
        patterns = tuple(a for a in self.allow if isinstance(a, re.Pattern))
        return exact, patterns

    def allowed(self, found: str) -> bool:
        exact, patterns = self._allowed
        return found in exact or any(p.fullmatch(found) for p in patterns)

    @property
    def allows_any(self) -> bool:
        return bool(self.allow)

    def at(self, path: str) -> Decision:
        """What to do with the value at ``path`` ("" for the top): ``LEAVE`` it (and what
        it holds) alone, ``MASK`` it whole, or look for ``kinds`` in the strings it holds
        (``kinds`` empty: a container is gone through, its own strings are not scanned)."""
        cache = self._cache
        found = cache.get(path)
        if found is None:
            found = self._decide(path)
            if len(cache) < 4096:  # paths are few; a flood of distinct keys is not kept
                cache[path] = found
        return found

    @cached_property
    def _cache(self) -> dict[str, Decision]:
        return {}

    def _decide(self, path: str) -> Decision:
        if _matches(self.skip, path):
            return LEAVE
        if _matches(self.mask, path):
            return MASK
        special = next((k for p, k in self.fields.items() if _matches((p,), path)), None)
        if special is not None:
            return ("scan", frozenset(special))
        if self.only is not None and not _matches(self.only, path):
            return ("scan", frozenset())  # not one of the fields scanned (but what it holds may be)
        return ("scan", frozenset(self.kinds))


Decision = tuple[str, frozenset[str]]
LEAVE: Final[Decision] = ("leave", frozenset())
MASK: Final[Decision] = ("mask", frozenset())


def _matches(patterns: Collection[str], path: str) -> bool:
    if not path:
        return False
    last = path.rpartition(".")[2]
    for pattern in patterns:
        if "." not in pattern:
            if fnmatchcase(last, pattern):
                return True
        elif fnmatchcase(path, pattern):
            return True
    return False
