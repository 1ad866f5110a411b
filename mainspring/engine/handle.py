"""Run handles: stream a run's events, await its outcome, cancel it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio

from ..errors import RunCancelledError, RunFailedError, RunNotFoundError
from ..events import EffectFinished, Event, ModelDelta
from ..status import RunStatus
from .driver import RunDriver
from .fold import RunFold
from .outcome import RunOutcome, outcome_of
from .registry import POLL_INTERVAL
from .runs import Runs
from .takeover import cancel_run


class RunHandle:
    """A run in a runtime: returned by ``start``, ``resume`` and ``fork``.

    ``tenant``: the handle of a tenant-scoped view (``TenantRuntime.handle``), checked on
    first use: another tenant's run is not found, as a missing one is.
    """

    def __init__(
        self,
        runs: Runs,
        run_id: str,
        driver: RunDriver | None = None,
        *,
        tenant: str | None = None,
    ) -> None:
        self._runs = runs
        self.run_id = run_id
        self._driver = driver  # the driver this handle started, for a read-free outcome
        self._unchecked = tenant  # the tenant the run must belong to, until checked once

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    async def events(self, *, after: int = 0, deltas: bool = True) -> AsyncGenerator[Event, None]:
        """The run's journal from ``after`` on, then live events until it ends or parks.

        Live, a streaming model call's tokens arrive as ``model_delta`` events as they
        are generated (``deltas=False`` leaves them out); they are never journaled, so
        a subscriber that joins later sees the whole answer in ``effect_finished``.
        """
        await self._check_tenant()
        runs = self._runs
        live = runs.registry.get(self.run_id)
        last = after
        if live is not None:
            subs = runs.registry.subscribers_of(self.run_id)
            live.listen(subs.publish)
            send, recv = subs.add(deltas=deltas)
            finished: set[tuple[int, int, int]] = set()  # effects whose tokens are over
            try:
                backlog = live.uncommitted()  # taken before the read: nothing falls between
                history = await runs.store.read(self.run_id, after=after)
                for event in sorted(
                    {e.seq: e for e in [*history, *backlog]}.values(), key=lambda e: e.seq
                ):
                    if event.seq > last:
                        last = event.seq
                        _note_finished(event, finished)
                        yield event
                async with recv:
                    async for event in recv:
                        if isinstance(d := event.data, ModelDelta):
                            if (d.step, d.task, d.effect) not in finished:  # not after its end
                                yield event
                        elif event.seq > last:
                            _note_finished(event, finished)
                            last = event.seq
                            yield event
            finally:
                subs.remove(send)
            return
        while True:
            history = await runs.store.read(self.run_id, after=last)
            for event in history:
                last = event.seq
                yield event
            record = await runs.store.get_run(self.run_id)
            if record is None or record.status is not RunStatus.RUNNING:
                for event in await runs.store.read(self.run_id, after=last):
                    last = event.seq
                    yield event
                return
            if self.run_id in runs.registry:  # it started here meanwhile: follow it live
                async for event in RunHandle(runs, self.run_id).events(after=last, deltas=deltas):
                    yield event
                return
            await anyio.sleep(POLL_INTERVAL)

    async def _check_tenant(self) -> None:
        tenant = self._unchecked
        if tenant is not None:
            if await self._runs.store.get_run(self.run_id, tenant=tenant) is None:
                raise RunNotFoundError(self.run_id)
            self._unchecked = None

    async def _settled_fold(self) -> RunFold | None:
        """The fold of the driver this handle started, once that driver stopped cleanly.

        No store read: the common way to learn a run's end. None if another driver
        took the run over, or this one stopped on an error.
        """
        driver, registry = self._driver, self._runs.registry
        if driver is not None and registry.latest(self.run_id) is driver:
            if not driver.stopped:  # (done exists only once someone waits: spare it)
                await driver.done.wait()
            if (
                registry.latest(self.run_id) is driver
                and driver.outcome is None
                and driver.existing is None
            ):
                return driver.fold
        self._driver = None
        return None

    async def wait(self) -> RunOutcome:
        """Wait until the run stops moving (finished, failed, cancelled or parked)."""
        await self._check_tenant()
        fold = await self._settled_fold()
        if fold is not None:
            return outcome_of(fold)
        return await self._runs.wait(self.run_id)

    async def result(self) -> Any:
        """Wait for the run to end and return its final state.

        A parked run is waited for until it is resumed and ends; raises
        RunFailedError or RunCancelledError if it ends that way.
        """
        await self._check_tenant()
        fold = await self._settled_fold()
        if fold is not None and fold.status is RunStatus.FINISHED:
            return fold.schema.output(fold.state)  # the common case: no outcome to build
        while True:
            outcome = await self.wait()
            if outcome.status is RunStatus.FINISHED:
                return outcome.state
            if outcome.status is RunStatus.FAILED:
                raise RunFailedError(self.run_id, outcome.error or {})
            if outcome.status is RunStatus.CANCELLED:
                raise RunCancelledError(f"run {self.run_id!r} was cancelled")
            await self._runs.registry.wait_for_change(self.run_id)

    async def cancel(self, *, actor: str | None = None) -> None:
        await self._check_tenant()
        await cancel_run(self._runs, self.run_id, actor)

    async def status(self) -> RunStatus:
        await self._check_tenant()
        return (await self._runs.record(self.run_id)).status


def _note_finished(event: Event, finished: set[tuple[int, int, int]]) -> None:
    """Remember an effect that finished (its late tokens are dropped) or a run that ended."""
    data = event.data
    if isinstance(data, EffectFinished):
        finished.add((data.step, data.task, data.effect))
