"""Semantic (warm) memory: namespaced facts and passages with hybrid search.

``async with SemanticMemory.open("sqlite:///memory.db") as memory``: see
docs/memory-semantic.md. Backends: :class:`SQLiteItemStore` (embedded) and
``mainspring.memory.semantic.postgres.PostgresItemStore`` (shared by many workers).
"""

from ..scope import Scope
from .filters import Condition, parse_filters
from .index import AutoIndex, ExactIndex, HnswIndex
from .items import Hit, MemoryItem, NewItem, Source, WriteResult, WriteStatus
from .memory import DEFAULT_DEDUPE, DEFAULT_SUPERSEDE, SemanticMemory
from .protocols import Change, ItemStore, Selection, VectorIndex
from .resolver import Resolver, SimilarityResolver, Verdict
from .resolver_model import ModelResolver
from .sqlite import SQLiteItemStore
from .stores import open_item_store

__all__ = [
    "DEFAULT_DEDUPE",
    "DEFAULT_SUPERSEDE",
    "AutoIndex",
    "Change",
    "Condition",
    "ExactIndex",
    "Hit",
    "HnswIndex",
    "ItemStore",
    "MemoryItem",
    "ModelResolver",
    "NewItem",
    "Resolver",
    "SQLiteItemStore",
    "Scope",
    "Selection",
    "SemanticMemory",
    "SimilarityResolver",
    "Source",
    "VectorIndex",
    "Verdict",
    "WriteResult",
    "WriteStatus",
    "open_item_store",
    "parse_filters",
]
