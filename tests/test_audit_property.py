"""Property: any tampering with a stored chain is found, and placed where it was done."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring.guard.audit.chains import check_chain
from mainspring.store._chain import GENESIS, chain_rows, link
from mainspring.store.audit import ChainRow

RUN = "run-1"


def _chain(payloads: list[bytes]) -> list[ChainRow]:
    rows = [(RUN, i + 1, "emitted", float(i), p) for i, p in enumerate(payloads)]
    return [ChainRow(r[1], r[2], r[3], r[4], r[5]) for r in chain_rows(GENESIS, rows)]


def _renumber(rows: list[ChainRow]) -> list[ChainRow]:
    return [r._replace(seq=i + 1) for i, r in enumerate(rows)]


payloads = st.lists(st.binary(min_size=1, max_size=12), min_size=3, max_size=30, unique=True)


@given(payloads)
def test_an_untouched_chain_has_no_findings(p: list[bytes]) -> None:
    assert check_chain(RUN, _chain(p), len(p)) == []


@given(payloads, st.data())
def test_an_edit_is_found_at_its_seq(p: list[bytes], data: st.DataObject) -> None:
    rows = _chain(p)
    i = data.draw(st.integers(0, len(rows) - 1))
    rows[i] = rows[i]._replace(data=rows[i].data + b"!")
    found = check_chain(RUN, rows, len(rows))
    assert [(f.seq, f.kind) for f in found] == [(i + 1, "edited")]


@given(payloads, st.data())
def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(
    p: list[bytes], data: st.DataObject
) -> None:
    rows = _chain(p)
    i = data.draw(st.integers(0, len(rows) - 2))
    prev = GENESIS if i == 0 else rows[i - 1].hash
    assert prev is not None
    new = rows[i].data + b"!"
    rows[i] = rows[i]._replace(data=new, hash=link(prev, RUN, i + 1, "emitted", rows[i].ts, new))
    found = check_chain(RUN, rows, len(rows))
    assert [(f.seq, f.kind) for f in found] == [(i + 2, "edited")]


@given(payloads, st.data())
def test_a_deletion_is_found(p: list[bytes], data: st.DataObject) -> None:
    rows = _chain(p)
    i = data.draw(st.integers(0, len(rows) - 1))
    renumber = data.draw(st.booleans())
    del rows[i]
    if renumber:
        rows = _renumber(rows)
    found = check_chain(RUN, rows, len(rows) if renumber else len(p))
    if renumber and i == len(p) - 1:
        return  # the tail cut and the run row fixed: only an anchor past it can tell
    assert found
    if not renumber:
        kind = "truncated" if i == len(p) - 1 else "deleted"
        assert [(f.seq, f.kind) for f in found] == [(i + 1, kind)]
    else:
        assert found[0].seq is not None and abs(found[0].seq - (i + 1)) <= 1


@given(payloads, st.data())
def test_an_insertion_is_found(p: list[bytes], data: st.DataObject) -> None:
    rows = _chain(p)
    i = data.draw(st.integers(0, len(rows)))
    forged = ChainRow(
        i + 1, "emitted", 0.0, b"forged", data.draw(st.binary(min_size=32, max_size=32))
    )
    rows.insert(i, forged)
    rows = _renumber(rows)
    found = check_chain(RUN, rows, len(rows))
    assert found
    assert min(f.seq or 0 for f in found) == i + 1


@given(payloads, st.data())
def test_a_swap_is_found_at_both_places(p: list[bytes], data: st.DataObject) -> None:
    rows = _chain(p)
    i, j = sorted(
        data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=2, max_size=2, unique=True))
    )
    rows[i], rows[j] = rows[j]._replace(seq=i + 1), rows[i]._replace(seq=j + 1)
    found = check_chain(RUN, rows, len(rows))
    assert {(f.seq, f.kind) for f in found} == {(i + 1, "reordered"), (j + 1, "reordered")}


@settings(max_examples=50)
@given(payloads, st.data())
def test_any_mix_of_tamperings_is_found(p: list[bytes], data: st.DataObject) -> None:
    rows = _chain(p)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["edit", "delete", "swap", "rehash"]))
        i = data.draw(st.integers(0, len(rows) - 1))
        if op == "edit":
            rows[i] = rows[i]._replace(data=rows[i].data + b"~")
        elif op == "delete" and len(rows) > 1 and i < len(rows) - 1:
            del rows[i]
        elif op == "swap" and i + 1 < len(rows):
            rows[i], rows[i + 1] = (
                rows[i + 1]._replace(seq=rows[i].seq),
                rows[i]._replace(seq=rows[i + 1].seq),
            )
        elif op == "rehash":
            rows[i] = rows[i]._replace(hash=bytes(32))
    if [r.data for r in rows] == p:
        return  # the operations cancelled out (two swaps of the same pair)
    assert check_chain(RUN, rows, len(p))
