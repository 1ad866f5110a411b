"""Taking over runs nobody drives: resume a parked run, cancel it, recover a crashed one.

The Runtime's ``resume``, ``cancel`` and ``recover`` are these functions. A run
that is live in this runtime is acted on through its driver; any other run is
adopted (its lease claimed, its fold rebuilt from the journal) first; a cancel of a
run nobody drives needs no graph: it claims the run and writes its end through a
journal writer of its own.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import anyio

from ..errors import RunStateError, StoreError
from ..events import Cancelled, Failed, Resumed
from ..graph.compiled import CompiledGraph
from ..status import RunStatus
from ..store import RunQuery, RunRecord, appends_now
from .driver import RunDriver
from .fold import RunFold
from .gate import approval_answer_error
from .journal import JournalWriter, Stopped
from .queueing import has_queues
from .registry import lost_the_run
from .runs import Runs

log = logging.getLogger("mainspring.runtime")

RECOVER_PAGE: Final = 500  # orphaned runs read at a time: recovery never holds them all


async def resume_run(
    runs: Runs,
    run_id: str,
    value: Any,
    interrupt_id: str | None,
    values: dict[str, Any] | None,
    graph: CompiledGraph | None,
    actor: str | None = None,
) -> RunDriver | None:
    """Continue a parked run (or one a crashed process left): the driver now driving it,
    or None if the run's live driver here took the values."""
    live = runs.registry.get(run_id)
    if live is not None and live.winding_up:
        await live.done.wait()  # it is stopping: resume the run as it leaves it
        live = None
    if live is not None:
        resolved = resolve_values(live.fold, run_id, value, interrupt_id, values, value_given=True)
        if resolved:
            live.check_json(resolved, f"the resume values of run {run_id!r}")
            live.record(Resumed(resolved, actor=actor))
            await live.commit(RunStatus.RUNNING)
            # The run was parking (which frees its lease) as the values came: it is this
            # process's to drive again, so take the lease back before anyone else does.
            await _reclaim(runs, live)
        return None
    record = await runs.record(run_id)
    if record.status.terminal:
        raise RunStateError(
            f"run {run_id!r} has {record.status.value}; nothing to resume "
            "(fork it to run again from an earlier point)"
        )
    driver = await runs.adopt(run_id, graph, record)
    try:
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
    except BaseException:
        # Refused values change nothing: the lease the adoption took goes back, so the
        # right values can come from anywhere (not only from this process).
        with anyio.CancelScope(shield=True), anyio.move_on_after(runs.services.release_timeout):
            await runs.store.release(run_id, runs.services.owner)
        raise
    if resolved:
        driver.record(Resumed(resolved, actor=actor))
    # Durable before we return, and marked running, so a crash from here on leaves
    # a run that recovery finds (not one that looks parked with nothing pending).
    try:
        await driver.commit(RunStatus.RUNNING)
    except Stopped:  # another writer resumed it first (a conflict), or the store failed
        outcome = driver.outcome
        runs.registry.stopped(driver)
        if isinstance(outcome, Exception):
            raise outcome from None
        raise
    if record.queue is not None:
        # A queued run is its queue's workers' to drive: its lease back, they are woken
        # (the store's release of a queued run notifies its queue).
        await runs.store.release(run_id, runs.services.owner)
        return None
    runs.spawn(driver)
    return driver


async def cancel_run(runs: Runs, run_id: str, actor: str | None = None) -> None:
    """Stop a live run here, or end a parked or orphaned one in its journal (``actor``: who
    asked, recorded in the ``cancelled`` event)."""
    live = runs.registry.get(run_id)
    if live is not None and not live.done.is_set():
        live.request_cancel(actor)
        await live.done.wait()
        if live.outcome is None or not isinstance(live.outcome, StoreError):
            return
        if not lost_the_run(live.outcome):
            raise live.outcome  # the store failed before the cancel could be recorded
        # Another process took the run over meanwhile: cancel it as a run not driven here.
    record = await runs.record(run_id)
    if record.status.terminal:
        raise RunStateError(f"run {run_id!r} is already {record.status.value}; nothing to cancel")
    services = runs.services
    fence = await runs.store.claim(run_id, services.owner, services.lease_ttl)
    queued = record.queue is not None and has_queues(runs.store)
    if fence is None and queued:
        stopped = await cancel_elsewhere(runs, run_id, actor)
        if stopped is None:
            raise RunStateError(
                f"run {run_id!r} is driven by worker {record.owner}, which was asked to cancel "
                "it and has not stopped it yet; it will at its next step"
            )
        if stopped.terminal:
            return  # cancelled there (or it ended first)
        # It parked before its worker heard the request: nobody drives it, end it here.
        fence = await runs.store.claim(run_id, services.owner, services.lease_ttl)
    if fence is None:
        raise RunStateError(
            f"run {run_id!r} is being driven by another process ({record.owner}); cancel it there"
        )
    for child in await runs.store.list_runs(RunQuery(parent_run_id=run_id)):
        if not child.status.terminal:
            await cancel_run(runs, child.run_id, actor)
    await end_run(runs, run_id, fence, Cancelled("cancelled by request", actor=actor))


async def end_run(
    runs: Runs, run_id: str, fence: int, end: Cancelled | Failed, error: str | None = None
) -> None:
    """Write the end of a run nobody drives (its lease just claimed, ``fence``) through a
    journal writer of its own: a cancel here, a poisoned run failed by a worker."""
    services, store = runs.services, runs.store
    record = await runs.record(run_id)
    writer = JournalWriter(
        services,
        run_id,
        record.last_seq,
        store=store,
        durability=record.durability,
        check_json=services.check_json,
        listeners=services.listeners,
        append_now=store.append_now if appends_now(store) else None,
    )
    writer.fence = fence
    writer.record(end)
    await writer.commit(
        RunStatus.CANCELLED if isinstance(end, Cancelled) else RunStatus.FAILED, error
    )
    runs.registry.signal(run_id)


async def recover_runs(runs: Runs, resume: bool) -> tuple[list[RunRecord], list[RunRecord]]:
    """Every orphaned run, a page at a time (resumed as it is found, or listed): the runs
    found, and those left to recover (unknown graph, or ``resume`` False)."""
    found: list[RunRecord] = []
    recoverable: list[RunRecord] = []
    after: tuple[float, str] | None = None
    owner = runs.services.owner
    while True:
        page = await runs.store.orphaned_runs(owner, limit=RECOVER_PAGE, after=after)
        for record in page:
            if record.run_id in runs.registry or record.parent_run_id is not None:
                continue  # subgraph runs are resumed by their parent
            found.append(record)
            if not resume:
                recoverable.append(record)
                continue
            try:
                driver = await runs.adopt(record.run_id, None, record)
            except RunStateError as exc:
                log.warning("run %s left unfinished by a crashed process: %s", record.run_id, exc)
                recoverable.append(record)
                continue
            log.info("recovering run %s (graph %s) from its journal", record.run_id, record.graph)
            runs.spawn(driver)
        if len(page) < RECOVER_PAGE:
            break
        after = (page[-1].created_at, page[-1].run_id)
    return found, recoverable


async def _reclaim(runs: Runs, driver: RunDriver) -> None:
    """Take back the lease the park freed, keeping the driver's token (its appends in
    flight stay valid). If another process took the run meanwhile, the driver's next
    append is refused and it stops."""
    owner, ttl = runs.services.owner, runs.services.lease_ttl
    started = time.monotonic()
    fence = await runs.store.claim(driver.run_id, owner, ttl, fence=driver.fence)
    if fence is not None and fence == driver.fence:
        driver.lease_valid_until = started + ttl
    elif fence is not None:  # held by someone meanwhile: not ours to keep
        await runs.store.release(driver.run_id, owner)


def resolve_values(
    fold: RunFold,
    run_id: str,
    value: Any,
    interrupt_id: str | None,
    values: dict[str, Any] | None,
    *,
    value_given: bool,
) -> dict[str, Any]:
    """The values to resume the run with, by interrupt (``rt.resume``'s arguments checked
    against its pending interrupts; an approval's answer against the shapes it takes)."""
    resolved = _resolved(fold, run_id, value, interrupt_id, values, value_given=value_given)
    if resolved:
        asked = {i.id: i.payload for _, i in fold.pending_interrupts}
        for iid, answer in resolved.items():
            payload = asked.get(iid)
            if isinstance(payload, dict) and isinstance(ask := payload.get("approve"), dict):
                problem = approval_answer_error(answer)
                if problem is not None:
                    raise RunStateError(
                        f"run {run_id!r} waits for an approval of {ask.get('name')!r} "
                        f"(interrupt {iid}): {problem}"
                    )
    return resolved


def _resolved(
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


async def cancel_elsewhere(runs: Runs, run_id: str, actor: str | None) -> RunStatus | None:
    """Ask the worker driving a queued run to cancel it, and wait until the run stopped
    moving: its status then (ended, or parked before the worker heard), or None if it
    still runs after two lease periods."""
    store = runs.store
    assert has_queues(store)
    await runs.watch_store()  # listening before asking: the answer is not missed
    await store.queues.request_cancel(run_id, actor)
    with anyio.move_on_after(max(5.0, 2 * runs.services.lease_ttl)):
        while True:
            record = await runs.record(run_id)
            if record.status is not RunStatus.RUNNING:
                return record.status
            await runs.watch_store()
            await runs.registry.wait_for_change(run_id)
    return None
