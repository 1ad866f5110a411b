"""Checking a store's anchor chain, and the runs against their anchors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from ...store._chain import CREATED, DELETIONS, GENESIS, REST, Anchor, anchor_hash
from ...store.audit import AuditRun, ChainRow
from ...store.records import tenant_of
from .findings import Finding
from .signing import Verify


def check_anchors(
    anchors: Sequence[Anchor], verify: Verify | None, witness: tuple[int, bytes] | None
) -> list[Finding]:
    """The anchor chain's own links, signatures and a witnessed head."""
    findings: list[Finding] = []
    prev, expect = GENESIS, 1
    for a in anchors:
        if a.pos > expect:
            what = f"anchor {expect}" if a.pos == expect + 1 else f"anchors {expect}..{a.pos - 1}"
            findings.append(Finding(None, None, "anchor_deleted", f"{what} missing", pos=expect))
        fields = (a.pos, a.run_id, a.seq, a.head, a.reason, a.at, a.actor, a.detail)
        if a.pos == expect and anchor_hash(prev, *fields) != a.hash:
            findings.append(
                Finding(
                    a.run_id, None, "anchor_edited",
                    f"anchor {a.pos} ({a.reason} of run {a.run_id} at seq {a.seq}) is not what "
                    "was hashed; or the anchor before it was edited and its hash recomputed",
                    pos=a.pos,
                )
            )  # fmt: skip
        if verify is not None:
            if a.sig is None:
                findings.append(
                    Finding(a.run_id, None, "signature_missing", "unsigned anchor", pos=a.pos)
                )
            elif not verify(a.sig, a.hash):
                findings.append(
                    Finding(
                        a.run_id, None, "signature_invalid",
                        "its signature does not verify: the anchor or its hash was rewritten",
                        pos=a.pos,
                    )
                )  # fmt: skip
        prev, expect = a.hash, a.pos + 1
    if witness is not None:
        pos, digest = witness
        found = next((a for a in anchors if a.pos == pos), None)
        if found is None or found.hash != digest:
            findings.append(
                Finding(
                    None, None, "anchor_truncated",
                    f"the witnessed anchor {pos} is {'gone' if found is None else 'different'}",
                    pos=pos,
                )
            )  # fmt: skip
    return findings


def check_run_anchors(
    run_id: str, rows: Sequence[ChainRow], anchors: Sequence[Anchor]
) -> list[Finding]:
    """One present run against its anchors: every anchored head is still in its chain,
    a chained run has its creation anchor, nothing follows an anchor at rest unless a
    ``resumed`` anchor says the run was set running again. Judged from the hashed records
    and the anchors only: the run's row (status, updated_at) is the attacker's to edit."""
    findings: list[Finding] = []
    by_seq = {r.seq: r for r in rows}
    # Made under the chain (its first event hashed): a run written before it, or with it
    # off, and continued since has no creation anchor, rightly.
    chained = bool(rows) and rows[0].seq == 1 and rows[0].hash is not None
    top = rows[-1].seq if rows else 0
    if chained and not any(a.reason == CREATED for a in anchors):
        findings.append(
            Finding(
                run_id, None, "run_unanchored",
                "a chained run with no creation anchor: its anchors were deleted, or the "
                "run was inserted",
            )
        )  # fmt: skip
    for a in anchors:
        if a.reason in DELETIONS:
            continue
        if a.seq > top:
            findings.append(
                Finding(
                    run_id, top + 1, "truncated",
                    f"anchor {a.pos} saw the run at seq {a.seq}; its journal ends at {top}",
                    pos=a.pos,
                )
            )  # fmt: skip
            continue
        row = by_seq.get(a.seq)
        stored = GENESIS if a.seq == 0 else (None if row is None else row.hash)
        if (row is not None or a.seq == 0) and stored != a.head:
            findings.append(
                    Finding(
                        run_id, a.seq, "head_mismatch",
                        f"anchor {a.pos} holds another hash for seq {a.seq}: records up to it "
                        "were rewritten and their hashes recomputed",
                        pos=a.pos,
                    )
                )  # fmt: skip
    kept = [a for a in anchors if a.reason not in DELETIONS]
    if kept and kept[-1].reason == REST and top > kept[-1].seq:
        last = kept[-1]
        findings.append(
            Finding(
                run_id, last.seq + 1, "inserted",
                f"records {last.seq + 1}..{top} follow the run's anchor at rest (seq "
                f"{last.seq}, anchor {last.pos}) and no anchor says it was resumed",
            )
        )  # fmt: skip
    return findings


def check_moved(run: AuditRun | None, run_id: str, rows: Sequence[ChainRow]) -> list[Finding]:
    """The run row's tenant and metadata against what its hashed ``run_started`` event
    recorded: a run moved to another tenant (or user) by editing its row is found here."""
    if run is None or not rows or rows[0].seq != 1 or rows[0].kind != "run_started":
        return []
    try:
        data = msgspec.json.decode(rows[0].data)
    except msgspec.DecodeError:
        return []  # an edited record: check_chain reports it
    started = data.get("metadata") if isinstance(data, dict) else None
    started = started if isinstance(started, dict) else {}
    # A fork's row adds where it came from; its run_started keeps the source's metadata.
    row_meta = {k: v for k, v in run.metadata.items() if k != "forked_from"}
    if run.tenant == tenant_of(started) and row_meta == started:
        return []
    what = (
        f"its row says tenant {run.tenant!r}, its run_started event {tenant_of(started)!r}"
        if run.tenant != tenant_of(started)
        else "its row's metadata is not what its run_started event recorded"
    )
    return [Finding(run_id, 1, "moved", f"{what}: the run row was edited")]


def deleted_runs(
    anchors_by_run: Mapping[str, Sequence[Anchor]], present: set[str]
) -> tuple[list[Finding], list[str]]:
    """Anchored runs that are gone: findings, or notes where a purge or erasure says why."""
    findings: list[Finding] = []
    notes: list[str] = []
    for run_id, anchors in anchors_by_run.items():
        if run_id in present:
            continue
        gone = [a for a in anchors if a.reason in DELETIONS]
        if gone:
            a = gone[-1]
            when = f"{a.at:.3f}"
            notes.append(
                f"run {run_id}: {a.reason} at {when} by {a.actor or '?'} (seq {a.seq}, anchor {a.pos})"
            )
        else:
            findings.append(
                Finding(
                    run_id, None, "run_deleted",
                    f"anchored at {', '.join(str(a.pos) for a in anchors)} but gone from the "
                    "store, and no purge or erasure anchor says why",
                )
            )  # fmt: skip
    return findings, notes
