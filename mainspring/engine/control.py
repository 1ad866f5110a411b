"""Taking over runs nobody drives: resume a parked run, cancel it, recover a crashed one.

The Runtime's ``resume``, ``cancel`` and ``recover`` are these functions. A run
that is live in this runtime is acted on through its driver; any other run is
adopted (its lease claimed, its fold rebuilt from the journal) first.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from ..errors import RunStateError, StoreError
from ..events import Cancelled, Event, Resumed
from ..graph.compiled import CompiledGraph
from ..status import RunStatus
from ..store.base import RunQuery, RunRecord
from .fold import RunFold
from .handle import RunHandle
from .journal import lost_the_run

if TYPE_CHECKING:
    from .driver import RunDriver
    from .runtime import Runtime

log = logging.getLogger("mainspring.runtime")

RECOVER_PAGE: Final = 500  # orphaned runs read at a time: recovery never holds them all


async def resume(
    rt: Runtime,
    run_id: str,
    value: Any,
    interrupt_id: str | None,
    values: dict[str, Any] | None,
    graph: CompiledGraph | None,
) -> RunHandle:
    live = rt._live.get(run_id)
    if live is not None and live.winding_up:
        await live.done.wait()  # it is stopping: resume the run as it leaves it
        live = None
    if live is not None:
        resolved = resolve_values(live.fold, run_id, value, interrupt_id, values, value_given=True)
        if resolved:
            live.check_json(resolved, f"the resume values of run {run_id!r}")
            live.record(Resumed(resolved))
            await live.commit(RunStatus.RUNNING)
            # The run was parking (which frees its lease) as the values came: it is this
            # process's to drive again, so take the lease back before anyone else does.
            await _reclaim(rt, live)
        return RunHandle(rt, run_id)
    record = await rt._record(run_id)
    if record.status.terminal:
        raise RunStateError(
            f"run {run_id!r} has {record.status.value}; nothing to resume "
            "(fork it to run again from an earlier point)"
        )
    driver = await rt._adopt(run_id, graph)
    resolved = resolve_values(
        driver.fold,
        run_id,
        value,
        interrupt_id,
        values,
        value_given=record.status is RunStatus.INTERRUPTED or values is not None,
    )
    if resolved:
        driver.check_json(resolved, f"the resume values of run {run_id!r}")
        driver.record(Resumed(resolved))
    # Durable before we return, and marked running, so a crash from here on leaves
    # a run that recovery finds (not one that looks parked with nothing pending).
    await driver.commit(RunStatus.RUNNING)
    rt._spawn(driver)
    return RunHandle(rt, run_id, driver)


async def cancel(rt: Runtime, run_id: str) -> None:
    live = rt._live.get(run_id)
    if live is not None and not live.done.is_set():
        live.request_cancel()
        await live.done.wait()
        if live.outcome is None or not isinstance(live.outcome, StoreError):
            return
        if not lost_the_run(live.outcome):
            raise live.outcome  # the store failed before the cancel could be recorded
        # Another process took the run over meanwhile: cancel it as a run not driven here.
    record = await rt._record(run_id)
    if record.status.terminal:
        raise RunStateError(f"run {run_id!r} is already {record.status.value}; nothing to cancel")
    fence = await rt.store.claim(run_id, rt.owner, rt.lease_ttl)
    if fence is None:
        raise RunStateError(
            f"run {run_id!r} is being driven by another process ({record.owner}); cancel it there"
        )
    for child in await rt.store.list_runs(RunQuery(parent_run_id=run_id)):
        if not child.status.terminal:
            await cancel(rt, child.run_id)
    record = await rt._record(run_id)
    event = Event.of(run_id, record.last_seq + 1, time.time(), Cancelled("cancelled by request"))
    await rt.store.append(
        run_id,
        record.last_seq,
        [event],
        status=RunStatus.CANCELLED,
        durability=record.durability,
        fence=fence,
    )
    for listener in rt._listeners:
        listener(event)
    rt._signal(run_id)


async def recover(rt: Runtime, resume: bool) -> list[RunRecord]:
    """Every orphaned run, a page at a time (resumed as it is found, or listed)."""
    found: list[RunRecord] = []
    recoverable: list[RunRecord] = []
    after: tuple[float, str] | None = None
    while True:
        page = await rt.store.orphaned_runs(rt.owner, limit=RECOVER_PAGE, after=after)
        for record in page:
            if record.run_id in rt._live or record.parent_run_id is not None:
                continue  # subgraph runs are resumed by their parent
            found.append(record)
            if not resume:
                recoverable.append(record)
                continue
            try:
                driver = await rt._adopt(record.run_id, None)
            except RunStateError as exc:
                log.warning("run %s left unfinished by a crashed process: %s", record.run_id, exc)
                recoverable.append(record)
                continue
            log.info("recovering run %s (graph %s) from its journal", record.run_id, record.graph)
            rt._spawn(driver)
        if len(page) < RECOVER_PAGE:
            break
        after = (page[-1].created_at, page[-1].run_id)
    rt.recoverable = recoverable
    return found


async def _reclaim(rt: Runtime, driver: RunDriver) -> None:
    """Take back the lease the park freed, keeping the driver's token (its appends in
    flight stay valid). If another process took the run meanwhile, the driver's next
    append is refused and it stops."""
    started = time.monotonic()
    fence = await rt.store.claim(driver.run_id, rt.owner, rt.lease_ttl, fence=driver.fence)
    if fence is not None and fence == driver.fence:
        driver.lease_valid_until = started + rt.lease_ttl
    elif fence is not None:  # held by someone meanwhile: not ours to keep
        await rt.store.release(driver.run_id, rt.owner)


def resolve_values(
    fold: RunFold,
    run_id: str,
    value: Any,
    interrupt_id: str | None,
    values: dict[str, Any] | None,
    *,
    value_given: bool,
) -> dict[str, Any]:
    pending = {i.id: t.node for t, i in fold.pending_interrupts}
    listing = ", ".join(f"{iid} (node {node!r})" for iid, node in pending.items())
    if values is not None:
        unknown = [k for k in values if k not in pending]
        if unknown:
            raise RunStateError(
                f"run {run_id!r} has no pending interrupt {unknown[0]!r}; pending: {listing or 'none'}"
            )
        return dict(values)
    if interrupt_id is not None:
        if interrupt_id not in pending:
            raise RunStateError(
                f"run {run_id!r} has no pending interrupt {interrupt_id!r}; pending: {listing or 'none'}"
            )
        return {interrupt_id: value}
    if not pending:
        if value_given and value is not None:
            raise RunStateError(
                f"run {run_id!r} is not waiting on an interrupt; there is nothing to resume"
            )
        return {}
    if len(pending) > 1:
        raise RunStateError(
            f"run {run_id!r} has {len(pending)} pending interrupts: {listing}; "
            "name one with interrupt_id=... or pass values={id: value}"
        )
    return {next(iter(pending)): value}
