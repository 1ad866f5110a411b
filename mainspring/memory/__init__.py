"""Memory in three tiers, and what puts it before a model.

* hot: :mod:`.session`, per-thread key-value state, message history and versioned
  shared state with TTLs, in process or on Redis;
* warm: :mod:`.semantic`, namespaced facts and passages with two times, embedded on
  the local model, searched by vector, keyword and metadata (SQLite embedded,
  PostgreSQL shared by many workers);
* cold: :mod:`.archive`, compressed append-only files, and the tiering that moves
  idle sessions and old items there and back;
* :mod:`.context` assembles what fits a token budget; :mod:`.knowledge` ingests
  documents; :mod:`.tools` gives agents remember/recall/forget.

``Memory`` bundles the tiers as a runtime capability (``Runtime(memory=...)``), which
nodes reach as ``ctx.memory``: every read and write a journaled effect through the gate.
Names load on first use: ``import mainspring.memory`` alone loads no model or driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_MODULES = {
    "Memory": ".bundle",
    "NodeMemory": ".node",
    "Scope": ".scope",
    "memory_tools": ".tools",
    "VersionConflict": ".errors",
    "MemoryError": ".errors",
    "SessionMemory": ".session",
    "Versioned": ".session",
    "LocalSessionMemory": ".session",
    "RedisSessionMemory": ".session",
    "open_session_memory": ".session",
    "SemanticMemory": ".semantic",
    "MemoryItem": ".semantic",
    "Hit": ".semantic",
    "WriteResult": ".semantic",
    "Source": ".semantic",
    "Archive": ".archive",
    "ArchiveRecord": ".archive",
    "LocalArchive": ".archive",
    "Tiering": ".archive",
    "TieringPolicy": ".archive",
    "TieringReport": ".archive",
    "AssembledContext": ".context",
    "ContextBuilder": ".context",
    "GatewaySummarizer": ".context",
    "assemble": ".context",
    "ingest": ".knowledge",
    "IngestReport": ".knowledge",
}

if TYPE_CHECKING:
    from .bundle import Memory as Memory
    from .node import NodeMemory as NodeMemory
    from .scope import Scope as Scope
    from .tools import memory_tools as memory_tools

__getattr__ = lazy_getattr(__name__, _MODULES, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))


__all__ = sorted(_MODULES)
