"""Scale-out workers: processes that claim runs from the PostgreSQL store's queue.

``Worker`` drives the runs of its queues in a Runtime (``mainspring worker`` runs one);
``QueueConfig`` sets a queue's limits; ``Schedule`` is a cron schedule its workers start.
"""

from __future__ import annotations

from ..store._pg_queue import QueueConfig, QueueStats, WorkerInfo
from ..store._pg_schedules import Schedule
from .core import Worker
from .schedules import next_tick

__all__ = ["QueueConfig", "QueueStats", "Schedule", "Worker", "WorkerInfo", "next_tick"]
