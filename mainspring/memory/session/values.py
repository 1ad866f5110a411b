"""What session memory accepts, checked the same way by every backend: names, TTLs,
and values that are JSON data (they come back equal after a trip through JSON)."""

from __future__ import annotations

import math
from typing import Any, NoReturn

import msgspec

from ...errors import TenantError
from .protocol import DEFAULT_TTL, SessionSnapshot, TTLArg, Versioned

_encoder = msgspec.json.Encoder()
decode = msgspec.json.Decoder().decode

JSON_TYPES = "str, int, float, bool, None, lists and dicts with str keys"


def encode(value: Any, what: str, name: object) -> tuple[bytes, Any]:
    """``value`` as JSON bytes and as read back; TypeError naming it (``what`` formatted
    with ``name``, only then) if it is not JSON data.

    Round-tripping is the check (cheaper than walking the value in Python): msgspec
    also encodes datetimes, bytes, tuples, sets, dataclasses..., which would come back
    as something else; those are refused rather than silently changed.
    """
    try:
        data = _encoder.encode(value)
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError, RecursionError):
        _refuse(value, what.format(name))
    if type(value) in _EXACT:  # encoded, so it reads back equal: skip the round trip
        return data, value
    back = decode(data)
    if back != value:
        _refuse(value, what.format(name))
    return data, back


#: Types whose encoding succeeds only when they read back equal (a str with surrogates
#: fails to encode; a float is not here: NaN encodes as null).
_EXACT = frozenset({str, int, bool, type(None)})


def _refuse(value: Any, what: str) -> NoReturn:
    problem = _first_problem(value, "") or f"a {type(value).__qualname__}"
    raise TypeError(f"{what} is not JSON data ({JSON_TYPES}): {problem}")


def _first_problem(value: Any, path: str) -> str | None:
    """Where in ``value`` something is not JSON data, and what it is (None: nowhere)."""
    where = f"at {path}: " if path else ""
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{where}a str with unpaired surrogates (not valid UTF-8)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}{value!r} (JSON has no NaN or infinity)"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if problem := _first_problem(item, f"{path}[{i}]"):
                return problem
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{where}the dict key {k!r} is a {type(k).__qualname__}, not a str"
            if problem := _first_problem(item, f"{path}[{k!r}]"):
                return problem
        return None
    hint = " (use a list)" if isinstance(value, tuple | set | frozenset) else ""
    return f"{where}a {type(value).__qualname__}{hint}"


def bad_names(thread: object, tenant: object, key: object = "-") -> NoReturn:
    """Raise the error that says what is wrong with a thread, tenant or key name."""
    if not isinstance(tenant, str):
        raise TenantError(f"tenant must be a str, not {type(tenant).__qualname__}: {tenant!r}")
    for label, name in (("thread", thread), ("key", key)):
        if not isinstance(name, str):
            raise TypeError(f"{label} must be a str, not {type(name).__qualname__}: {name!r}")
        if not name:
            raise ValueError(f"{label} must be a non-empty str")
    raise AssertionError("bad_names called with good names")


def check_names(thread: object, tenant: object, key: object = "-") -> None:
    if (
        type(thread) is not str
        or type(tenant) is not str
        or type(key) is not str
        or not thread
        or not key
    ):
        bad_names(thread, tenant, key)


def check_ttl(ttl: object) -> float | None:
    """A TTL in seconds: positive and finite, or None (never expires)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be seconds as a number, or None for never; not {ttl!r}")
    if not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive, finite number of seconds (or None), not {ttl}")
    return float(ttl)


def resolve_ttl(ttl: TTLArg, default: float | None) -> float | None:
    return default if ttl is DEFAULT_TTL else check_ttl(ttl)


def check_last(last: object) -> int | None:
    if last is None:
        return None
    if isinstance(last, bool) or not isinstance(last, int) or last < 0:
        raise ValueError(f"last must be a non-negative int or None (all), not {last!r}")
    return last


def check_version(expected: object) -> int:
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise ValueError(
            f"expected must be the version read (an int >= 0; 0: absent), not {expected!r}"
        )
    return expected


def check_idle_for(idle_for: object) -> float:
    if isinstance(idle_for, bool) or not isinstance(idle_for, int | float) or not idle_for >= 0:
        raise ValueError(f"idle_for must be seconds >= 0, not {idle_for!r}")
    return float(idle_for)


def check_time(last_active: object) -> float:
    if isinstance(last_active, bool) or not isinstance(last_active, int | float):
        raise TypeError(f"last_active must be epoch seconds (a float), not {last_active!r}")
    return float(last_active)


class EncodedSnapshot(msgspec.Struct, frozen=True):
    """A snapshot checked and encoded before a restore touches anything."""

    values: dict[str, bytes]
    messages: list[bytes]
    shared: dict[str, tuple[int, bytes]]


def encode_snapshot(snapshot: object) -> EncodedSnapshot:
    if not isinstance(snapshot, SessionSnapshot):
        raise TypeError(f"restore takes a SessionSnapshot, not {type(snapshot).__qualname__}")
    check_names(snapshot.thread, snapshot.tenant)
    values = {}
    for key, value in snapshot.values.items():
        check_names(snapshot.thread, snapshot.tenant, key)
        values[key] = encode(value, "snapshot value {!r}", key)[0]
    messages = [encode(m, "snapshot message {}", i)[0] for i, m in enumerate(snapshot.messages)]
    shared = {}
    for key, versioned in snapshot.shared.items():
        check_names(snapshot.thread, snapshot.tenant, key)
        if not isinstance(versioned, Versioned) or check_version(versioned.version) < 1:
            raise ValueError(f"snapshot shared value {key!r} must be a Versioned of version >= 1")
        shared[key] = (versioned.version, encode(versioned.value, "shared value {!r}", key)[0])
    return EncodedSnapshot(values, messages, shared)
