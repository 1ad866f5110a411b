"""The worker: claims runs of its queues from the PostgreSQL store and drives them.

A worker is a Runtime plus this loop; it keeps no state a restart would miss. It claims
as many runs as it has free slots (one transaction per queue, ``store/_pg_queue.py``),
drives each in the runtime (whose heartbeat renews the leases and whose fencing token
refuses a worker that lost one), and then sleeps until the first of: a notification
(``LISTEN``: a run was enqueued, handed back or resumed; a run's status changed, which
may free a limited slot), a run of its own ending, the next delayed run's time, another
worker's lease running out (a takeover), or a safety-net period (notifications are not
durable). No polling while idle.

A run whose workers died ``max_attempts`` times is failed as poisoned with what is known
(how many died, the last one), not retried forever. A cancel asked of a run this worker
drives (``mainspring_cancel``) stops it here.

``stop()`` starts the drain: no more claims; live runs may finish for ``drain_timeout``
seconds; whatever is still going then is handed back by the runtime's exit (the leases
released with a notification, so another worker takes them at once).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final

import anyio

from ..engine.driver import RunDriver
from ..engine.queueing import STATUS_CHANNEL, QueueStore, has_queues
from ..engine.runtime import Runtime
from ..engine.takeover import end_run
from ..errors import MainspringError, RunStateError, StoreError
from ..events import ErrorInfo, Failed
from ..status import Durability, RunStatus
from ..store._pg_queue import CANCEL_CHANNEL, Claimed, QueueConfig, check_queue_name
from ..store._pg_sql import QUEUE_CHANNEL

log = logging.getLogger("mainspring.worker")

SAFETY_NET: Final = 5.0  # seconds between claims when nothing wakes the worker
BACKOFF_FIRST: Final = 0.01  # seconds before looking again at a run due but not claimed


class Worker:
    """Drives the runs of ``queues`` in ``runtime`` (entered, on a PostgreSQL store), at most
    ``concurrency`` at once; ``configs`` set those queues' limits as it starts."""

    def __init__(
        self,
        runtime: Runtime,
        queues: Sequence[str],
        *,
        concurrency: int = 8,
        configs: Sequence[QueueConfig] = (),
        drain_timeout: float = 30.0,
        schedules: bool = True,
    ) -> None:
        if not queues:
            raise RunStateError("Worker(queues=[...]): name at least one queue to work on")
        for name in queues:
            try:
                check_queue_name(name)
            except StoreError as exc:
                raise RunStateError(str(exc)) from None
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise RunStateError(f"Worker(concurrency={concurrency!r}): give a whole number >= 1")
        store = runtime.store
        if not has_queues(store):
            raise RunStateError(
                f"a worker needs a store with a run queue: the PostgreSQL store "
                f"(--store postgresql://...), not the {type(store).__name__}"
            )
        self.runtime = runtime
        self.store: QueueStore = store
        self.queues = list(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.configs = list(configs)
        self.drain_timeout = drain_timeout
        self.schedules = schedules
        self.live: dict[str, RunDriver] = {}
        self.state = "starting"  # starting, running, draining, stopped
        self.claimed_total = 0
        self._wake = anyio.Event()
        self._stop = anyio.Event()
        self._next_queue = 0  # round robin: no queue starves another
        self._drain: anyio.CancelScope | None = None  # the drain's scope, while it lasts
        self._schema = store.queues.schema

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Drain: claim nothing more; ``run()`` returns once live runs end or the drain
        times out. ``now``: end the drain (or skip it): live runs are handed back at once
        (an operator's second signal). Safe to call from the worker's event loop at any time."""
        if now:
            self.drain_timeout = 0
            if self._drain is not None:
                self._drain.cancel()
        self._stop.set()
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self.live)

    async def run(self) -> None:
        """Claim and drive until ``stop()``, then drain (see the module's docstring)."""
        queues = self.store.queues
        for config in self.configs:
            await queues.configure(config)
        listener = self.store.queues.listener(
            {
                QUEUE_CHANNEL: self._on_queue,
                STATUS_CHANNEL: self._on_status,
                CANCEL_CHANNEL: self._on_cancel,
            },
            lambda: self._wake.set(),  # the event of the moment: the loop makes a new one
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._beat)
                if self.schedules:
                    from .schedules import run_schedules

                    tg.start_soon(run_schedules, self.runtime, self.queues)
                self.state = "running"
                await self._loop(listener, tg)
                self.state = "draining"
                await self._beat_once()
                with anyio.move_on_after(self.drain_timeout) as self._drain:
                    while self.live:
                        await next(iter(self.live.values())).done.wait()
                self._drain = None
                tg.cancel_scope.cancel()
        finally:
            listener.close()
            self.state = "stopped"
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await queues.worker_gone(self.runtime.owner)
                except StoreError as exc:
                    log.warning("could not remove this worker's row: %s", exc)

    async def _loop(self, listener: object, tg: anyio.abc.TaskGroup) -> None:
        from ..store._pg_listener import PgListener

        assert isinstance(listener, PgListener)
        backoff = BACKOFF_FIRST
        while not self._stop.is_set():
            await listener.ensure()  # before claiming: nothing enqueued after it is missed
            self._wake = anyio.Event()
            claimed_before = self.claimed_total
            try:
                full = await self._claim_round(tg)
            except StoreError as exc:
                log.warning("could not claim runs: %s", exc)
                full = False
            if full and self.busy < self.concurrency:
                continue  # a queue gave all it was asked: more may be waiting
            if self.claimed_total > claimed_before:
                backoff = BACKOFF_FIRST
            timeout = SAFETY_NET if listener.listening else 1.0
            if self.busy < self.concurrency:
                queues = self.store.queues
                try:
                    soon = await queues.next_wake(self.queues, self.runtime.owner)
                except StoreError:
                    soon = None
                if soon == 0.0:
                    # Due already, yet not claimed: a lease that ran out just after the
                    # claim looked (try again at once), or a run a limit holds back (a
                    # freed slot is announced; look again less and less often meanwhile).
                    timeout, backoff = min(timeout, backoff), min(backoff * 2, SAFETY_NET)
                    soon = None
                for wait in (soon, queues.refill_wait(self.queues)):
                    if wait is not None:
                        timeout = min(timeout, wait + 0.005)
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _claim_round(self, tg: anyio.abc.TaskGroup) -> bool:
        """One claim per queue while slots are free; True if a queue filled what it was asked."""
        full = False
        n = len(self.queues)
        for i in range(n):
            free = self.concurrency - self.busy
            if free <= 0 or self._stop.is_set():
                break
            queue = self.queues[(self._next_queue + i) % n]
            began = time.monotonic()  # the leases run from before the claim was sent
            claimed = await self.store.queues.claim(
                queue, self.runtime.owner, self.runtime.lease_ttl, free
            )
            full = full or len(claimed) == free
            for claim in claimed:
                await self._start(claim, tg, began)
        self._next_queue = (self._next_queue + 1) % n
        return full

    # -- driving ----------------------------------------------------------------------------

    async def _start(self, claim: Claimed, tg: anyio.abc.TaskGroup, claimed_at: float) -> None:
        rt = self.runtime
        runs = rt._runs
        self.claimed_total += 1
        try:
            if claim.poisoned:
                await self._fail_poisoned(claim)
                return
            if claim.status != RunStatus.RUNNING:  # ended between the pick and the claim
                await rt.store.release(claim.run_id, rt.owner)
                return
            app = rt.loader.known(claim.run_id, claim.graph, None)
            if app is None:  # not given to this worker: import it from the recorded ref
                app = await runs.graph_of(claim.run_id, None)
            fold = await runs.load_fold(app, claim.run_id)
        except Exception as exc:  # a graph module may raise anything on import
            # An unknown graph, a module that fails to import, the store failing: give it
            # back for later (another worker, one that knows the graph, may take it), and
            # say why. Not a death, and never this worker's end.
            log.warning(
                "cannot drive run %s of queue %s now (offered again in %.0f s): %s",
                claim.run_id, claim.queue, rt.lease_ttl, exc,
                exc_info=not isinstance(exc, MainspringError | StoreError),
            )  # fmt: skip
            deferred = False
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(5),
                contextlib.suppress(StoreError),
            ):
                await self.store.queues.defer(claim.run_id, rt.owner, rt.lease_ttl)
                deferred = True
            if not deferred:  # the heartbeat would renew its lease: hand it back there
                rt.services.registry.unreleased.add(claim.run_id)
            return
        driver = runs.driver(app, fold, Durability(claim.durability))
        driver.fence = claim.fence
        driver.lease_valid_until = claimed_at + rt.lease_ttl
        if claim.took_over:
            log.info(
                "took over run %s of queue %s (its worker's lease expired; %d so far)",
                claim.run_id, claim.queue, claim.deaths,
            )  # fmt: skip
        self.live[claim.run_id] = driver
        runs.spawn(driver)
        if claim.cancel_requested is not None:
            driver.request_cancel(claim.cancel_requested or None)
        tg.start_soon(self._forget_when_done, driver)

    async def _forget_when_done(self, driver: RunDriver) -> None:
        await driver.done.wait()
        self.live.pop(driver.run_id, None)
        self._wake.set()

    async def _fail_poisoned(self, claim: Claimed) -> None:
        """End a run that keeps killing its workers: failed, with why, in its journal."""
        rt = self.runtime
        message = (
            f"poisoned: {claim.deaths} workers died or froze while driving this run "
            f"(max_attempts={claim.max_attempts} for queue {claim.queue!r}); not retried again. "
            "Inspect its journal (`mainspring show RUN`), fix the cause, then fork it to run again"
        )
        error = Failed(ErrorInfo("PoisonedRunError", message))
        await end_run(rt._runs, claim.run_id, claim.fence, error, message)
        log.error("run %s of queue %s failed as poisoned", claim.run_id, claim.queue)

    # -- notifications and heartbeat ---------------------------------------------------------

    def _on_queue(self, payload: str) -> None:
        schema, _, queue = payload.partition(":")
        if schema == self._schema and queue in self.queues:
            self._wake.set()

    def _on_status(self, payload: str) -> None:
        # A run of this store changed status: a slot of a limited queue may have freed
        # (a queue without limits has nothing to gain from it).
        if self.store.queues.limited(self.queues) and f'"{self._schema}"' in payload:
            self._wake.set()

    def _on_cancel(self, payload: str) -> None:
        schema, _, run_id = payload.partition(":")
        driver = self.live.get(run_id) if schema == self._schema else None
        spawn = self.runtime.services.spawn
        if driver is not None and not driver.done.is_set() and spawn is not None:
            spawn(self._cancel_asked, driver)

    async def _cancel_asked(self, driver: RunDriver) -> None:
        try:
            actor = await self.store.queues.cancel_requested(driver.run_id)
        except StoreError:
            actor = ""
        driver.request_cancel(actor or None)

    async def _beat(self) -> None:
        while True:
            await self._beat_once()
            await anyio.sleep(max(0.5, self.runtime.lease_ttl / 3))

    async def _beat_once(self) -> None:
        try:
            await self.store.queues.worker_beat(
                self.runtime.owner, self.queues, self.concurrency, self.busy, self.state
            )
        except StoreError as exc:
            log.warning("could not record this worker's heartbeat: %s", exc)
