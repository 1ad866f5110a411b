"""Lease expiry without comparing clocks: what this process has seen of others' leases.

A store without a clock of its own (SQLite: every process brings its own) cannot
judge a lease by comparing the holder's ``lease_until`` with the claimant's wall
clock: a claimant whose clock runs ahead would take over every healthy run, and
one whose clock is behind would never recover a frozen process's runs. Instead a
claimant watches each lease it would take: the holder moves ``lease_until`` at
every heartbeat, so a lease seen unchanged for its ttl, on the claimant's own
monotonic clock, has not been renewed for that long and is expired. The price:
a claimant must look twice, a ttl apart, before it takes over a silent holder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Final

# Seen leases not looked at again for this long are forgotten (the run ended or moved).
_FORGET_AFTER: Final = 3600.0
_PRUNE_EVERY: Final = 1024


class LeaseWatch:
    """Thread-safe: the SQLite store asks from its writer and reader threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # run id -> (the lease as last seen, when first seen so, when last looked at)
        self._seen: dict[str, tuple[Hashable, float, float]] = {}
        self._checks = 0

    def expired(self, run_id: str, lease: Hashable, ttl: float) -> bool:
        """Whether ``lease`` (owner, token and renewal mark) has stood still for ``ttl`` s."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(run_id)
            self._checks += 1
            if self._checks % _PRUNE_EVERY == 0:
                self._prune(now)
            if seen is None or seen[0] != lease:
                self._seen[run_id] = (lease, now, now)
                return False
            self._seen[run_id] = (lease, seen[1], now)
            return now - seen[1] >= ttl

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._seen.pop(run_id, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, _, last) in self._seen.items() if now - last > _FORGET_AFTER]
        for key in stale:
            del self._seen[key]
