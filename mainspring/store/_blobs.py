"""Large values stored once by content hash: the journal keeps a reference to them.

A tool's 100 KB document is journaled in its ``effect_finished``, then again in every
event that carries it (the state update that adds it to the messages, each run of a
thread, each call that echoes it): without this, a journal grows by the document each
time. A durable store passes every encoded event through :func:`split_large` before it
writes it, and every stored event it reads through :func:`join_large`.

The stored form of a split event is its JSON object with one key first, ``"$refs"``, the
digests it references, and each JSON string of ``BLOB_MIN`` bytes (UTF-8) or more
replaced by ``{"$blob": "sha256:<hex>", "bytes": n}``; the strings themselves go to the
store's ``blobs`` table, keyed by that digest. The prefix is what a reader looks at: event
data is a typed record whose fields never include ``$refs``, so a payload that does not
start with it is stored as it was encoded and read back untouched. Inside a split
payload, a user dict that has a ``$blob`` or ``$literal`` key is wrapped as
``{"$literal": {...}}``, so no user value is ever read as a reference.

The audit chain hashes the stored bytes, references included: the digests inside make the
chain cover the blobs' content, and a blob changed or lost is an integrity error on read.

Pure functions, no I/O: the stores fetch and insert the blobs.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from ..errors import CorruptStoreError

#: A JSON string of this many UTF-8 bytes or more is stored once, as a blob.
BLOB_MIN: Final = 4096
#: Payloads shorter than this are never looked into (the hot path: one ``len``). A
#: string of BLOB_MIN bytes may hide in a shorter payload; strings that size are seldom
#: repeated, and the decode of every mid-sized payload (a model call's capped arguments)
#: would cost each append ~10-30 us.
SPLIT_MIN: Final = 16384

REFS: Final = "$refs"
BLOB: Final = "$blob"
LITERAL: Final = "$literal"
PREFIX: Final = b'{"$refs":'  # how a split payload starts (the encoder writes no spaces)
TEXT_PREFIX: Final = PREFIX.decode()  # the same, for stores that keep event data as text
_DIGEST: Final = "sha256:"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_sha256 = hashlib.sha256

Blobs = dict[str, bytes]  # digest -> the string's UTF-8 bytes


def digest_of(data: bytes) -> str:
    """A blob's key: ``sha256:<hex>`` of its bytes."""
    return _DIGEST + _sha256(data).hexdigest()


def split_large(
    data: bytes, *, min_payload: int = SPLIT_MIN, min_string: int = BLOB_MIN
) -> tuple[bytes, Blobs]:
    """``data`` (an event's encoded JSON object) as stored, and the blobs it references.

    Unchanged, with no blobs, when it is shorter than ``min_payload`` (no decode) or holds
    no string of ``min_string`` bytes. Callers on a hot path check the length first.
    """
    if len(data) < min_payload:
        return data, {}
    blobs: Blobs = {}
    try:
        value = _decode(data)
        if type(value) is not dict or REFS in value:
            return data, {}  # not an event's object: never split (and never read as one)
        out = _split(value, blobs, min_string)
    except RecursionError:  # nested deeper than a walk can go here: stored as it is
        return data, {}
    if not blobs:
        return data, {}
    return _encode({REFS: list(blobs), **out}), blobs


def _split(value: Any, blobs: Blobs, min_string: int) -> Any:
    kind = type(value)
    if kind is str:
        if len(value) * 4 >= min_string:  # a char is at most 4 bytes: no encode for most
            raw = value.encode("utf-8", "surrogatepass")
            if len(raw) >= min_string:
                digest = digest_of(raw)
                blobs[digest] = raw
                return {BLOB: digest, "bytes": len(raw)}
        return value
    if kind is dict:
        out = {k: _split(v, blobs, min_string) for k, v in value.items()}
        return {LITERAL: out} if BLOB in value or LITERAL in value else out
    if kind is list:
        return [_split(v, blobs, min_string) for v in value]
    return value


def is_split(data: bytes | str) -> bool:
    """Whether a stored payload references blobs (then :func:`join_large` it)."""
    if type(data) is bytes:
        return data.startswith(PREFIX)
    return isinstance(data, str) and data.startswith(TEXT_PREFIX)


_DATA: Final = operator.itemgetter(3)  # a stored row's data: (seq, kind, ts, data, ...)
# Just above a split payload's prefix (":" < ";"), and below every other event's data: an
# encoded event object starts with '{"' and a field name (letters) or is '{}', all of
# which sort above it. So one min() over the rows, in C, finds any split payload.
_ABOVE: Final = b'{"$refs";'
_ABOVE_TEXT: Final = _ABOVE.decode()


def any_split(rows: Sequence[Any]) -> bool:
    """Whether any stored row ``(seq, kind, ts, data, ...)`` may reference blobs: never
    False when one does (a row edited by hand may make it True for none). A read of a run
    without blobs pays one ``min`` in C for it, ~30 ns an event, not a Python call."""
    if not rows:
        return False
    try:
        low = min(map(_DATA, rows))
    except TypeError:  # bytes and text mixed: a SQLite file edited by hand
        return any(map(is_split, map(_DATA, rows)))
    return bool(low < (_ABOVE if type(low) is bytes else _ABOVE_TEXT))


def refs(data: bytes | str) -> list[str]:
    """The digests a stored payload references (none if it is not split)."""
    if not is_split(data):
        return []
    found = _decode(data).get(REFS)
    return [d for d in found if type(d) is str] if type(found) is list else []


def refs_of(rows: Iterable[bytes | str]) -> list[str]:
    """The distinct digests a batch of stored payloads references, in order."""
    seen: dict[str, None] = {}
    for data in rows:
        if is_split(data):
            seen.update(dict.fromkeys(refs(data)))
    return list(seen)


def check_blobs(found: Mapping[str, bytes], wanted: Iterable[str], where: str) -> None:
    """Raise :class:`CorruptStoreError` unless every wanted blob was found and its bytes
    still hash to its digest. ``where`` names what referenced them (a run, a seq)."""
    for digest in wanted:
        data = found.get(digest)
        if data is None:
            raise CorruptStoreError(
                f"{where} references blob {digest}, which the store's blobs table does not "
                "hold: it was deleted behind the store's back; restore the store from a backup"
            )
        if digest_of(data) != digest:
            raise CorruptStoreError(
                f"{where} references blob {digest}, whose stored bytes no longer hash to it: "
                "the blob was changed behind the store's back; restore the store from a backup"
            )


def join_large(
    data: bytes | str, fetch: Callable[[list[str]], Mapping[str, bytes]], where: str
) -> bytes | str:
    """A stored payload as it was encoded: unchanged unless split, else its references
    replaced by the blobs ``fetch`` returns (checked: see :func:`check_blobs`)."""
    if not is_split(data):
        return data
    wanted = refs(data)
    found = fetch(wanted)
    check_blobs(found, wanted, where)
    return join_checked(data, found, where)


def join_checked(data: bytes | str, blobs: Mapping[str, bytes], where: str) -> bytes:
    """A split payload with its references replaced from ``blobs`` (already checked)."""
    value = _decode(data)
    if type(value) is not dict:
        raise CorruptStoreError(f"{where} is not a JSON object: the stored event was changed")
    value.pop(REFS, None)
    try:
        return _encode(_join(value, blobs))
    except KeyError as exc:  # a reference not listed in $refs: the row was edited
        raise CorruptStoreError(
            f"{where} references blob {exc.args[0]} outside its $refs list: the stored "
            "event was changed behind the store's back"
        ) from None


def _join(value: Any, blobs: Mapping[str, bytes]) -> Any:
    kind = type(value)
    if kind is dict:
        if LITERAL in value and len(value) == 1:
            inner = value[LITERAL]
            return {k: _join(v, blobs) for k, v in inner.items()}
        digest = value.get(BLOB)
        if digest is not None:
            return blobs[digest].decode("utf-8", "surrogatepass")
        return {k: _join(v, blobs) for k, v in value.items()}
    if kind is list:
        return [_join(v, blobs) for v in value]
    return value
