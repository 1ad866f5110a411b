"""``verify``: read a store's chains and anchors as stored and report every tampering found.

Reads anchors first, then runs, then each run's events: anchors only grow, so everything
they name was committed before the events are read, and a live store can be verified.
A run that looks unanchored, or continued past its anchor at rest, may have been created
or resumed after the anchors were read: its anchor went in with those very events, so
the anchors are read once more and the run judged again with the new ones (never by its
row's status or time, which anyone with write access edits).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import MainspringError
from ...store._chain import Anchor
from ...store.audit import Audited, ChainRow
from .anchors import check_anchors, check_moved, check_run_anchors, deleted_runs
from .blobs import BlobUses, check_blobs, joined_row
from .chains import check_chain
from .findings import Finding, Report
from .signing import Verify, verifier


def audited(store: object) -> Audited:
    """The store (or a runtime's store) as an :class:`Audited` one, or a clear error."""
    target = getattr(store, "store", store)
    scoped = isinstance(getattr(store, "tenant", None), str) and hasattr(store, "runtime")
    if scoped:  # rt.tenant("x") (or its sync twin): one tenant's view, not the store
        raise MainspringError(
            f"{store!r} is one tenant's view of the store: the audit trail is store-wide "
            "(its anchors chain every tenant's runs), so verify, export, purge and erase "
            "are admin operations; give them the runtime or the store itself, not rt.tenant(...)"
        )
    if not isinstance(target, Audited):
        raise MainspringError(
            f"{target!r} keeps no audit chain; use a memory, SQLite or PostgreSQL store"
        )
    return target


async def verify(
    store: object,
    *,
    run: str | None = None,
    public_key: object | None = None,
    witness: tuple[int, bytes] | None = None,
) -> Report:
    """Check ``store`` (every run, or only ``run``) and its anchor chain.

    ``public_key`` (PEM path, bytes or key): every anchor must carry a valid signature.
    ``witness`` ``(pos, hash)``: an anchor seen before (``audit head``), which must still
    be there: the one way to notice the newest anchors cut off together with their runs.
    """
    s = audited(store)
    check: Verify | None = None if public_key is None else verifier(public_key)
    anchors = await s.audit_anchors()
    runs = {r.run_id: r for r in await s.audit_runs()}
    with_events = set(await s.audit_event_runs())
    by_run: dict[str, list[Anchor]] = {}
    for a in anchors:
        by_run.setdefault(a.run_id, []).append(a)
    findings: list[Finding] = [] if run is not None else check_anchors(anchors, check, witness)
    if run is not None:  # the one run's anchors still need their own links checked
        findings += [f for f in check_anchors(anchors, check, witness) if f.run_id in (run, None)]
    present = set(runs) | with_events
    ids: Sequence[str] = sorted(present) if run is None else [run]
    report = Report(
        findings, [], anchors=len(anchors), signed=sum(a.sig is not None for a in anchors)
    )
    unchained = 0
    blobs = BlobUses()
    suspects: dict[str, tuple[list[ChainRow], list[Finding]]] = {}
    for run_id in ids:
        rows = await s.audit_chain(run_id)
        record = runs.get(run_id)
        if record is None and not rows:
            continue  # gone: judged with the anchors below
        report.runs += 1
        report.events += len(rows)
        blobs.add(run_id, rows)
        if record is None and rows:
            report.findings.append(
                Finding(run_id, None, "orphan_events", f"{len(rows)} events, no run row")
            )
        chain = check_chain(run_id, rows, None if record is None else record.last_seq)
        report.findings += chain
        first = [await joined_row(s, rows[0])] if rows else []  # its values, blobs back
        report.findings += check_moved(record, run_id, first)
        judged = _judge(run_id, rows, by_run.get(run_id, []), chain)
        if any(f.kind in _LATE for f in judged):
            suspects[run_id] = (rows, chain)
        else:
            report.findings += judged
        if rows and all(r.hash is None for r in rows) and not by_run.get(run_id):
            unchained += 1
    if suspects:  # created or resumed since the anchors were read? Their anchors say so now
        known = anchors[-1].pos if anchors else 0
        later = [a for a in await s.audit_anchors() if a.pos > known]
        for run_id, (rows, chain) in suspects.items():
            top = rows[-1].seq if rows else 0
            new = [a for a in later if a.run_id == run_id and a.seq <= top]
            report.findings += _judge(run_id, rows, [*by_run.get(run_id, []), *new], chain)
    report.findings += await check_blobs(s, blobs)
    gone, notes = deleted_runs(
        {k: v for k, v in by_run.items() if run is None or k == run}, present
    )
    report.findings += gone
    report.notes += notes
    if unchained:
        report.notes.append(
            f"{unchained} run(s) carry no hashes (written before the audit chain, or with it off)"
        )
    return report


#: Findings a run created or resumed while verify ran shows until its anchor is read.
_LATE = frozenset({"run_unanchored", "inserted"})


def _judge(
    run_id: str, rows: Sequence[ChainRow], anchors: Sequence[Anchor], chain: Sequence[Finding]
) -> list[Finding]:
    """The run against its anchors; a head that moved with a record already found says
    nothing new."""
    marked = {f.seq for f in chain}
    return [
        f
        for f in check_run_anchors(run_id, rows, anchors)
        if not (f.kind == "head_mismatch" and f.seq in marked)
    ]
