"""The audit chain's arithmetic, shared by every store and by the verifier.

Each journal event is linked to the one before it in its run::

    hash_n = SHA-256(hash_{n-1} || len(run_id) run_id || seq || len(kind) kind || ts || data)

with ``hash_0 = GENESIS`` and ``data`` the event's bytes exactly as the store keeps them
(its JSON object). ``seq`` and ``ts`` are packed as 8-byte big-endian integer and IEEE
double, lengths as 4 bytes: no two different records give the same input.

Anchors are a second chain, one per store, over the runs' heads: an anchor names a run,
the seq and hash its chain had reached, why it was written (``created``, ``rest``,
``purged``, ``erased``) and by whom, and links to the anchor before it in the same way.
A store writes an anchor in the transaction of a run's first commit and of each commit
that parks or ends it, so a run deleted whole leaves an anchor naming it.

Pure functions: no I/O, nothing imported beyond the standard library.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

#: The "hash before the first event" of every run, and before the first anchor.
GENESIS: Final = bytes(32)

_SEQ_TS: Final = struct.Struct(">qd")
_LEN: Final = struct.Struct(">I")
_sha256 = hashlib.sha256


def link(prev: bytes, run_id: str, seq: int, kind: str, ts: float, data: bytes) -> bytes:
    """The hash of one event, chained to ``prev`` (the hash of the event before it)."""
    rid = run_id.encode()
    k = kind.encode()
    return _sha256(
        b"".join(
            (prev, _LEN.pack(len(rid)), rid, _SEQ_TS.pack(seq, ts), _LEN.pack(len(k)), k, data)
        )
    ).digest()


def chain_rows(prev: bytes, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Event rows ``(run_id, seq, kind, ts, data)`` of one run with their hash appended,
    chained from ``prev``; ``data`` is bytes or text (encoded as UTF-8, as PostgreSQL keeps
    it). :func:`link` for each, with the run's and the kinds' parts made once (the hot path
    of every durable append)."""
    if not rows:
        return []
    rid = rows[0][0].encode()
    run_part = _LEN.pack(len(rid)) + rid
    kinds = _KIND_PARTS
    pack = _SEQ_TS.pack
    sha = _sha256
    out = []
    for row in rows:
        kind_part = kinds.get(row[2])
        if kind_part is None:
            k = row[2].encode()
            kind_part = kinds[row[2]] = _LEN.pack(len(k)) + k
        data = row[4]
        prev = sha(
            prev + run_part + pack(row[1], row[3]) + kind_part
            + (data if type(data) is bytes else data.encode())
        ).digest()  # fmt: skip
        out.append((*row, prev))
    return out


#: Each event kind's length-prefixed bytes, made on first use (a handful of kinds).
_KIND_PARTS: dict[str, bytes] = {}


# -- anchors ------------------------------------------------------------------------------------

#: Why an anchor was written.
CREATED: Final = "created"  # the run's first commit: the run exists
REST: Final = "rest"  # a commit that parked or ended the run (interrupted, finished, ...)
RESUMED: Final = "resumed"  # the commit that set a parked run running again
PURGED: Final = "purged"  # retention deleted the run; seq and head are its last
ERASED: Final = "erased"  # right to erasure deleted the run; seq and head are its last
DELETIONS: Final = frozenset({PURGED, ERASED})


class Anchor(NamedTuple):
    """One entry of a store's anchor chain, as stored."""

    pos: int  # 1, 2, 3, ... in the order written
    run_id: str
    seq: int  # how far the run's chain had reached
    head: bytes  # the run's hash at ``seq`` (GENESIS for a run created without events)
    reason: str  # CREATED, REST, PURGED or ERASED
    at: float  # wall-clock seconds
    actor: str  # who: the runtime's lease owner, or the person/process given to purge
    detail: str  # JSON text: e.g. the purge's tenant and cutoff; "" if none
    hash: bytes
    sig: bytes | None  # Ed25519 signature of ``hash``, if the writer held a key


def anchor_hash(
    prev: bytes,
    pos: int,
    run_id: str,
    seq: int,
    head: bytes,
    reason: str,
    at: float,
    actor: str,
    detail: str,
) -> bytes:
    parts = [run_id.encode(), reason.encode(), actor.encode(), detail.encode()]
    body = b"".join(_LEN.pack(len(p)) + p for p in parts)
    return _sha256(prev + _SEQ_TS.pack(pos, at) + struct.pack(">q", seq) + head + body).digest()


Signer = Callable[[bytes], bytes]


def make_anchor(
    prev: bytes,
    pos: int,
    run_id: str,
    seq: int,
    head: bytes | None,
    reason: str,
    at: float,
    actor: str,
    detail: str = "",
    signer: Signer | None = None,
) -> Anchor:
    """The anchor at ``pos`` after one whose hash is ``prev``, signed if a signer is given."""
    h = head or GENESIS
    digest = anchor_hash(prev, pos, run_id, seq, h, reason, at, actor, detail)
    return Anchor(
        pos,
        run_id,
        seq,
        h,
        reason,
        at,
        actor,
        detail,
        digest,
        None if signer is None else signer(digest),
    )


def is_resume(status: str | None, before: str | None) -> bool:
    """Whether an append with this status, to a run whose stored status was ``before``,
    sets a parked run running again (a ``resumed`` anchor goes with it)."""
    return status == "running" and before is not None and before != "running"


def is_rest(status: str | None) -> bool:
    """Whether an append with this status parks or ends its run (an anchor goes with it)."""
    return status is not None and status != "running"


def still_deletable(status: str, updated_at: float, cutoff: float | None) -> bool:
    """Whether a run listed for deletion may still go, judged on its row as locked now: at
    rest (a run resumed since it was listed is being written) and, for a purge, unchanged
    since before its cutoff."""
    return status != "running" and (cutoff is None or updated_at < cutoff)


def default_actor() -> str:
    """Who writes when nobody is named: ``user@host:pid`` of this process."""
    import getpass
    import os
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


class AuditSettings:
    """A store's audit chain: on unless ``enabled`` is False (benchmarks, legacy files);
    ``signer`` signs each anchor's hash with a key the database never sees; ``actor``
    names the writer in the anchors it writes. Set them before the store is opened."""

    __slots__ = ("_actor", "enabled", "signer")

    def __init__(self, enabled: bool = True, signer: Signer | None = None, actor: str = "") -> None:
        self.enabled = enabled
        self.signer = signer
        self._actor = actor

    @property
    def actor(self) -> str:
        if not self._actor:
            self._actor = default_actor()
        return self._actor

    @actor.setter
    def actor(self, value: str) -> None:
        self._actor = value

    def on(self) -> AuditSettings | None:
        """Itself if the chain is on, else None (what the write paths are given)."""
        return self if self.enabled else None
