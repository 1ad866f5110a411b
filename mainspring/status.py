"""Where a run stands, and how durably it is written: pure types every layer shares."""

from __future__ import annotations

import enum
from typing import Final


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
        return self in _TERMINAL


# The members as module constants, for the paths every run takes. On Python 3.11 the
# enum metaclass defines ``__getattr__``, so each read of ``RunStatus.RUNNING`` goes
# through a slot wrapper (~850 instructions, ~140 ns) where a global costs ~15 ns; an
# agent run read such members ~45 times, ~40k instructions (callgrind, W12 2026-12-07).
RUNNING: Final = RunStatus.RUNNING
INTERRUPTED: Final = RunStatus.INTERRUPTED
FINISHED: Final = RunStatus.FINISHED
FAILED: Final = RunStatus.FAILED
CANCELLED: Final = RunStatus.CANCELLED
SYNC: Final = Durability.SYNC
OFF: Final = Durability.OFF
_TERMINAL: Final = frozenset((FINISHED, FAILED, CANCELLED))
