"""Checking one run's hash chain as stored, and saying what was done to it and where.

A chain only says that a link is broken; these functions say the most specific thing the
stored hashes prove: a record whose hash fits it at another position was moved there
(``reordered``; a block moved by the same offset is an ``inserted`` or renumbered
``deleted``), a gap in the sequence numbers is ``deleted``, and a record that fits
nowhere was ``edited``. An edit whose author also recomputed that record's hash moves the
break to the next record: the finding there says so (nothing stored tells the two apart;
an anchor or a signed head does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ...store._chain import GENESIS, link
from ...store.audit import ChainRow
from .findings import Finding

#: How far (in positions) a moved record is looked for with every nearby hash as the one
#: before it; farther, only with the hash stored just before the candidate position.
_NEAR: Final = 4
#: How many broken records of one run are looked for at every position (each costs a hash
#: per record of the run); the rest only nearby, so a run rewritten wholesale stays linear.
_FAR_SEARCHES: Final = 64


def check_chain(run_id: str, rows: Sequence[ChainRow], last_seq: int | None) -> list[Finding]:
    """Findings for one run's stored events (by seq); ``last_seq`` from its run row."""
    findings: list[Finding] = []
    by_seq = {r.seq: r for r in rows}
    explained: set[int] = set()  # seqs whose broken link an earlier finding explains
    moved: dict[int, int] = {}  # seq -> the seq it was written at
    prev, expect, hashed = GENESIS, 1, False
    top = rows[-1].seq + 1 if rows else 1
    far = _FAR_SEARCHES
    for r in rows:
        if r.seq > expect:
            findings.append(_gap(run_id, expect, r.seq - 1))
            explained.add(r.seq)
        if r.hash is None:
            if hashed:
                findings.append(
                    Finding(run_id, r.seq, "edited", "its hash was removed from a chained run")
                )
            prev, expect = GENESIS, r.seq + 1
            continue
        if link(prev, run_id, r.seq, r.kind, r.ts, r.data) != r.hash:
            origin = _written_at(run_id, r, by_seq, top if far > 0 else 0)
            far -= 1
            if origin is not None:
                moved[r.seq] = origin
                explained.add(r.seq + 1)
            elif r.seq not in explained:
                findings.append(_edited(run_id, r, by_seq, last_seq))
                nxt = by_seq.get(r.seq + 1)
                if (
                    nxt is not None
                    and nxt.hash is not None
                    and link(r.hash, run_id, nxt.seq, nxt.kind, nxt.ts, nxt.data) != nxt.hash
                ):
                    explained.add(nxt.seq)  # this record's hash is wrong too: one finding
        hashed = True
        prev, expect = r.hash, r.seq + 1
    findings = _absorb(findings, _moves(run_id, moved))
    if last_seq is not None and rows and rows[-1].seq < last_seq:
        findings.append(
            Finding(
                run_id, rows[-1].seq + 1, "truncated",
                f"the run's row says its journal reaches seq {last_seq}, but it ends at "
                f"{rows[-1].seq}: the records after it were deleted",
            )
        )  # fmt: skip
    elif last_seq is not None and not rows and last_seq > 0:
        findings.append(
            Finding(run_id, 1, "truncated", f"the run's row says seq {last_seq}; no records left")
        )
    return findings


def _absorb(findings: list[Finding], moves: list[Finding]) -> list[Finding]:
    """Drop the "edited" findings a renumbering explains: the record inserted before a
    block moved up, and the first record moved down (its predecessor is gone)."""
    covered: set[int] = set()
    for m in moves:
        if m.kind == "inserted" and m.seq is not None:
            covered.update(range(m.seq, m.seq + int(m.detail.split(" ", 1)[0])))
        elif m.kind == "deleted" and m.seq is not None:
            covered.add(m.seq)
    kept = [f for f in findings if not (f.kind == "edited" and f.seq in covered)]
    return kept + moves


def _gap(run_id: str, first: int, last: int) -> Finding:
    what = f"record {first}" if first == last else f"records {first}..{last}"
    return Finding(run_id, first, "deleted", f"{what} missing from the sequence")


def _edited(run_id: str, r: ChainRow, by_seq: dict[int, ChainRow], last_seq: int | None) -> Finding:
    if last_seq is not None and r.seq > last_seq:
        return Finding(
            run_id, r.seq, "inserted",
            f"record {r.seq} is past the run's last seq {last_seq} and does not chain",
        )  # fmt: skip
    before = f"; or record {r.seq - 1} was edited and its hash recomputed" if r.seq > 1 else ""
    return Finding(
        run_id, r.seq, "edited",
        f"record {r.seq} ({r.kind}) is not what was hashed when it was written{before}",
    )  # fmt: skip


def _written_at(run_id: str, r: ChainRow, by_seq: dict[int, ChainRow], top: int) -> int | None:
    """The seq this record (with its hash) was written at, if its hash fits another one
    (up to ``top``; 0: only nearby)."""
    assert r.hash is not None
    for j in _candidates(r.seq, top):
        if j == r.seq:
            continue
        prevs = [_hash_at(by_seq, j - 1)]
        if abs(j - r.seq) <= _NEAR:  # a swap of neighbours moves the hash before it too
            prevs += [h for k in range(j - 2, j + 3) if (h := _hash_at(by_seq, k)) is not None]
        for prev in prevs:
            if prev is not None and link(prev, run_id, j, r.kind, r.ts, r.data) == r.hash:
                return j
    return None


def _candidates(seq: int, top: int) -> list[int]:
    """Positions to try, nearest first."""
    near = [seq + d for d in range(1, _NEAR + 1)] + [seq - d for d in range(1, _NEAR + 1)]
    near = [j for j in near if j >= 1 and (top == 0 or j <= top)]
    if top == 0:
        return near
    return near + [j for j in range(1, top + 1) if j not in near]


def _hash_at(by_seq: dict[int, ChainRow], seq: int) -> bytes | None:
    if seq == 0:
        return GENESIS
    row = by_seq.get(seq)
    return None if row is None else row.hash


def _moves(run_id: str, moved: dict[int, int]) -> list[Finding]:
    """Moved records as findings: a block shifted by one offset is one insertion or
    deletion (records renumbered to hide it); anything else, each record reordered."""
    findings: list[Finding] = []
    seqs = sorted(moved)
    i = 0
    while i < len(seqs):
        start = seqs[i]
        offset = start - moved[start]
        j = i
        while (
            j + 1 < len(seqs)
            and seqs[j + 1] == seqs[j] + 1
            and seqs[j + 1] - moved[seqs[j + 1]] == offset
        ):
            j += 1
        end = seqs[j]
        if j > i and offset > 0:
            findings.append(
                Finding(
                    run_id, start - offset, "inserted",
                    f"{offset} record(s) inserted before seq {start}; records {start}..{end} "
                    f"were renumbered up by {offset} to make room",
                )
            )  # fmt: skip
        elif j > i and offset < 0:
            findings.append(
                Finding(
                    run_id, start - 1, "deleted",
                    f"{-offset} record(s) deleted at seq {start - 1}; records {start - 1}..{end} "
                    f"were renumbered down by {-offset} to close the gap",
                )
            )  # fmt: skip
        else:
            for seq in seqs[i : j + 1]:
                findings.append(
                    Finding(
                        run_id, seq, "reordered",
                        f"record {seq} was written as seq {moved[seq]}: records were swapped "
                        "or moved",
                    )
                )  # fmt: skip
        i = j + 1
    return findings
