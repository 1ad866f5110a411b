"""Where a run stands, and how durably it is written: pure types every layer shares."""

from __future__ import annotations

import enum


class Durability(enum.StrEnum):
    """How durable each commit of a run is before the run goes on.

    ``sync``: committed (fsync'd) before the next step; ``batch``: committed in a group
    commit shared with concurrent runs, still before the next step; ``off``: accepted
    and written soon after (lost if the process dies meanwhile).
    """

    SYNC = "sync"
    BATCH = "batch"
    OFF = "off"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # parked, waiting for resume values
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)
