"""What semantic memory holds and returns: items, hits, the outcome of a write."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Literal

import msgspec
import msgspec.structs

from ..scope import Scope

WriteStatus = Literal["added", "duplicate", "superseded", "pending"]


class Source(msgspec.Struct, frozen=True):
    """Where an item came from, for citations: a document, and where in it."""

    document: str  # the document's id (a path, a URL, a name the caller chose)
    title: str | None = None
    chunk: int | None = None  # the chunk's index in the document
    start: int | None = None  # character offsets in the document's text
    end: int | None = None
    heading: str | None = None  # the section the chunk sits in ("Install > Linux")


class MemoryItem(msgspec.Struct, frozen=True):
    """One remembered fact or passage.

    Two times: ``valid_from``/``valid_to`` say when the fact was true in the world
    (None: unknown / still true), ``recorded_at``/``updated_at`` when memory learned
    and last changed it (epoch seconds). An item a newer fact contradicts keeps its row
    with ``superseded_by`` set and ``valid_to`` closed, so history stays answerable
    (``search(as_of=...)``) and normal searches do not return it. ``key`` names the
    subject of a fact ("user.city"): a later item with the same key and scope
    supersedes it.
    """

    id: str
    text: str
    scope: Scope
    metadata: dict[str, Any] = {}
    key: str | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    recorded_at: float = 0.0
    updated_at: float = 0.0
    superseded_by: str | None = None
    source: Source | None = None
    indexed: bool = False  # its embedding is in the vector index (vector search sees it)
    accessed_at: float | None = None  # the last search that returned it (tiering reads it)


class Hit(msgspec.Struct, frozen=True):
    """A search result: the item and how it ranked (higher is better)."""

    item: MemoryItem
    score: float  # the hybrid score the results are sorted by
    vector: float | None = None  # cosine similarity to the query, if it was a vector match
    keyword: float | None = None  # keyword (BM25) score, if it was a keyword match


class WriteResult(msgspec.Struct, frozen=True):
    """What a write did. ``status`` ``pending``: stored and keyword-searchable now; the
    embedding, de-duplication and contradiction check run off the caller's path
    (``await memory.settle(id)`` returns the final result)."""

    id: str
    status: WriteStatus
    duplicate_of: str | None = None  # status "duplicate": the item this one repeats
    supersedes: tuple[str, ...] = ()  # items this one marked superseded


_PUNCTUATION = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The text as exact-duplicate detection compares it: NFKC, case-folded, punctuation
    dropped, runs of white space made one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", folded)).strip()


def text_digest(text: str) -> str:
    """What a store keeps to find an exact (normalised) duplicate: 32 hex characters."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:32]


class NewItem(msgspec.Struct, frozen=True):
    """One entry of :meth:`SemanticMemory.add_many` (what :meth:`~SemanticMemory.add` takes)."""

    text: str
    metadata: dict[str, Any] | None = None
    key: str | None = None
    valid_from: float | None = None
    source: Source | None = None
    id: str | None = None


def merged(old: MemoryItem, new: MemoryItem, now: float) -> MemoryItem:
    """``old`` after ``new`` turned out to repeat it: metadata merged (the newer wins),
    its last change now."""
    return msgspec.structs.replace(
        old,
        metadata={**old.metadata, **new.metadata},
        key=old.key or new.key,
        source=old.source or new.source,
        updated_at=now,
    )


def superseded(old: MemoryItem, new: MemoryItem, now: float) -> MemoryItem:
    """``old`` once ``new`` replaced it: kept, marked, valid until ``new`` starts."""
    end = new.valid_from if new.valid_from is not None else new.recorded_at
    return msgspec.structs.replace(old, superseded_by=new.id, valid_to=end, updated_at=now)
