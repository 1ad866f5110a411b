"""The cold archive: old sessions and demoted items, compressed, append-only, findable by
id, thread, kind and time, and promotable back (see ``docs/memory-archive.md``).

:class:`Archive` is the seam (a local directory by default: :class:`LocalArchive`);
:class:`Tiering` moves what a :class:`TieringPolicy` selects from the hot and warm tiers
into it, once or in the background.
"""

from __future__ import annotations

from .local import LocalArchive
from .protocol import (
    Archive,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveRecord,
    CompactReport,
    RecordKind,
)
from .tiering import Moved, Tiering, TieringPolicy, TieringReport, session_record_id
from .tiers import RestoresItems, SemanticTier, SessionTier

__all__ = [
    "Archive",
    "ArchiveCorruptError",
    "ArchiveError",
    "ArchiveRecord",
    "CompactReport",
    "LocalArchive",
    "Moved",
    "RecordKind",
    "RestoresItems",
    "SemanticTier",
    "SessionTier",
    "Tiering",
    "TieringPolicy",
    "TieringReport",
    "session_record_id",
]
