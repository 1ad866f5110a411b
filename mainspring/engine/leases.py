"""The runtime's heartbeat: it keeps this process's leases, and looks for runs to take over.

Every ``lease_ttl / 3`` seconds: hand back the leases drivers could not hand back when
they stopped, renew every lease this process holds (one statement for all), tell each
live driver how long it surely holds its run, and (with ``recover="resume"``) once
per ``lease_ttl`` look for runs whose process died or froze.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

import anyio

from ..errors import StoreError
from .seams import EngineServices

log = logging.getLogger("mainspring.runtime")


class LeaseKeeper:
    def __init__(
        self, services: EngineServices, recover: Callable[[], Awaitable[object]] | None
    ) -> None:
        self.services = services
        self._recover = recover  # None: this runtime takes no runs over while it runs
        self._strays: set[str] = set()  # runs leased here, driven by nothing, at the last beat

    async def heartbeat(self) -> None:
        """Runs until cancelled (the runtime closing)."""
        beats = 0
        while True:
            await anyio.sleep(self.services.lease_ttl / 3)
            beats += 1
            if self.services.registry.unreleased:  # before renewing, which would extend them
                await self.release_pending()
            if len(self.services.registry):
                await self.renew()
            if self._recover is not None and beats % 3 == 0:
                try:
                    await self._recover()
                except StoreError as exc:
                    log.warning("could not look for runs to recover: %s", exc)

    async def renew(self) -> None:
        """One renewal for every lease of this runtime; drivers learn how long they hold."""
        services = self.services
        started = time.monotonic()
        try:
            renewed = await services.store.renew(services.owner, services.lease_ttl)
        except StoreError as exc:
            log.warning("could not renew run leases: %s", exc)
            return
        # Only a chain of renewals with no gap keeps a lease: one renewed after it could
        # have expired may have been taken over meanwhile (its driver looks before acting).
        # A run the renewal did not extend is no longer ours (taken over while this
        # renewal was slow, or its claim superseded): its driver's lease runs out and it
        # looks in the store before its next effect, never acting on a stale claim.
        until = started + services.lease_ttl
        registry = services.registry
        for driver in registry.drivers():
            if started < driver.lease_valid_until and (renewed is None or driver.run_id in renewed):
                driver.lease_valid_until = until
        if renewed is not None:
            self._free_strays(renewed)

    def _free_strays(self, renewed: Collection[str]) -> None:
        """Hand back leases this process holds on runs nothing here drives (a claim whose
        reply was lost, say), which renewals would otherwise keep for ever: a run found so
        at two beats in a row (one beat is the moment between a claim and its driver)."""
        registry = self.services.registry
        stray = {r for r in renewed if r not in registry and r not in registry.unreleased}
        for run_id in stray & self._strays:
            log.warning("run %s was leased here but not driven: handing it back", run_id)
            registry.unreleased.add(run_id)
        self._strays = stray - self._strays

    async def release_pending(self) -> None:
        """Hand back the leases drivers could not hand back as they stopped."""
        services = self.services
        registry = services.registry
        for run_id in list(registry.unreleased):
            if run_id in registry:
                registry.unreleased.discard(run_id)  # driven here again: the lease is in use
                continue
            try:
                with anyio.move_on_after(services.release_timeout):
                    await services.store.release(run_id, services.owner)
                    registry.unreleased.discard(run_id)
            except StoreError as exc:
                log.warning("could not release run %s: %s", run_id, exc)
                return  # the store is still failing: try again at the next beat
