"""The store API under its former module name, for imports written before the split.

The protocols are in ``protocols.py``, the records in ``records.py``; new code imports
them from :mod:`mainspring.store` (``CommitStats`` and ``notify_commit`` from
``records``). Remove once the engine and telemetry import from there.
"""

from .protocols import (
    AppendsNow,
    Cursors,
    Journal,
    Leases,
    ObservesCommits,
    RunIndex,
    Store,
    StoreCapabilities,
)
from .records import (
    CommitObserver,
    CommitStats,
    CreateResult,
    Durability,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    ThreadInfo,
    notify_commit,
)

__all__ = [
    "AppendsNow",
    "CommitObserver",
    "CommitStats",
    "CreateResult",
    "Cursors",
    "Durability",
    "Journal",
    "Leases",
    "ObservesCommits",
    "RunIndex",
    "RunQuery",
    "RunRecord",
    "RunStatus",
    "Snapshot",
    "Store",
    "StoreCapabilities",
    "ThreadInfo",
    "notify_commit",
]
