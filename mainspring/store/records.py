"""What stores keep and hand back: run records, queries, snapshots, commit statistics.

Plain data shared by the store protocols (``protocols.py``), every backend and
the engine; no behaviour beyond :func:`notify_commit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ..status import Durability as Durability  # re-exported: the store API speaks them
from ..status import RunStatus as RunStatus

#: The tenant of a run whose metadata names none: single-tenant users never see another.
DEFAULT_TENANT: Final = ""


def tenant_of(metadata: Mapping[str, Any] | None) -> str:
    """The tenant a run with ``metadata`` belongs to: ``metadata["tenant"]``, else the
    default tenant ``""``. Only a string names a tenant (starts refuse any other value;
    a run written before that rule, with a number say, belongs to the default tenant)."""
    if not metadata:
        return DEFAULT_TENANT
    tenant = metadata.get("tenant")
    return tenant if isinstance(tenant, str) else DEFAULT_TENANT


@dataclass(slots=True, frozen=True)
class QueuePlacement:
    """Where a queued run waits for a worker (``Runtime.start(..., queue=...)``).

    ``available_at``: epoch seconds on the store's clock before which no worker starts it
    (a delayed run); on a start, ``delay`` seconds from now say the same.
    """

    name: str
    priority: int = 0
    available_at: float | None = None
    concurrency_key: str | None = None
    delay: float | None = None


@dataclass(slots=True)
class RunRecord:
    """The summary row of a run, kept in step with its journal."""

    run_id: str
    graph: str
    thread: str | None
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int = 0
    parent_run_id: str | None = None
    durability: Durability = Durability.SYNC
    owner: str | None = None
    lease_until: float | None = None
    fence: int = 0
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The run queue it belongs to (PostgreSQL store only): workers of that queue drive it.
    queue: QueuePlacement | None = None

    @property
    def tenant(self) -> str:
        """The tenant the run belongs to (from its metadata; stores index it)."""
        return tenant_of(self.metadata)


class RunQuery(msgspec.Struct, frozen=True):
    """Filters for :meth:`RunIndex.list_runs`; ``None`` means any."""

    status: Sequence[RunStatus] | None = None
    graph: str | None = None
    thread: str | None = None
    parent_run_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 100
    offset: int = 0
    #: Only runs of this tenant (``""``: the default tenant's); None: every tenant's.
    tenant: str | None = None


@dataclass(slots=True, frozen=True)
class ThreadInfo:
    """A thread: a conversation of one tenant. The same thread id in two tenants is two
    threads."""

    thread: str
    runs: int
    last_run_id: str
    last_status: RunStatus
    updated_at: float
    tenant: str = DEFAULT_TENANT


class Snapshot(msgspec.Struct, frozen=True):
    """A cached fold of a run's journal up to and including ``seq``."""

    run_id: str
    seq: int
    data: dict[str, Any]


class CreateResult(msgspec.Struct, frozen=True):
    record: RunRecord
    created: bool  # False: a run with this id already existed and was returned as is


class CommitStats(msgspec.Struct, frozen=True):
    """One physical commit of a store: how many run writes and events it carried."""

    writes: int  # creates and appends, of one run or several (group commit)
    events: int
    seconds: float


CommitObserver = Callable[[CommitStats], None]

_log = logging.getLogger("mainspring.store")


def notify_commit(observer: CommitObserver | None, stats: CommitStats) -> None:
    """Tell the observer about a commit; its failure is logged, never a failed write."""
    if observer is None:
        return
    try:
        observer(stats)
    except Exception:
        _log.exception("the store's commit observer failed; the commit itself succeeded")
