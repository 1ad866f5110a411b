"""What a journal's recorded effects give back: results revived to the types their
functions declare, errors rebuilt as the exceptions they were, and the results a fork
with ``effects="reuse"`` answers its calls with."""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..errors import EffectDeniedError, EffectError
from ..events import UNSET, EffectFinished, EffectStarted, ErrorInfo, Event


@lru_cache(maxsize=1024)
def _return_reviver(fn: Callable[..., Any]) -> Callable[[Any], Any] | None:
    from ..state import _reviver_for

    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    ret = hints.get("return")
    if ret is None or ret is type(None):
        return None
    if typing.get_origin(ret) in (typing.Awaitable, typing.Coroutine):
        ret = typing.get_args(ret)[-1]
    return _reviver_for(ret)


def recorded_error(name: str, error: ErrorInfo) -> BaseException:
    """The exception an effect raised, rebuilt from the journal for a resume or replay.

    The original type when it can be imported and built from its message, so a
    node's ``except ValueError:`` behaves as it did the first time; otherwise an
    EffectError naming it. A denial comes back as the EffectDeniedError it was.
    """
    module, type_name, message = error.module, error.type, error.message
    if type_name == EffectDeniedError.__name__:
        head, _, reason = message.partition(": ")
        hook = head.partition(" was denied by ")[2]  # "effect 'x' was denied by <hook>"
        return EffectDeniedError(name, reason or message, hook)
    if module:
        try:
            cls = getattr(importlib.import_module(module), type_name)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls(message)
        except Exception:  # not importable, or not buildable from one message
            pass
    return EffectError(name, type_name, message)


def revive(fn: Callable[..., Any], value: Any) -> Any:
    """Turn a result read back from JSON into the type ``fn`` is annotated to return."""
    return _revive(fn, value)


def _revive(fn: Callable[..., Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        reviver = _return_reviver(fn)
    except TypeError:  # unhashable callables
        return value
    return reviver(value) if reviver is not None else value


def reusable_effects(run_id: str, later: list[Event]) -> dict[tuple[int, int, int], dict[str, Any]]:
    """The recorded results a fork with ``effects='reuse'`` answers its effects with, by
    position (step, task, effect index); the last successful result of each position."""
    reuse: dict[tuple[int, int, int], dict[str, Any]] = {}
    keys: dict[tuple[int, int, int], str] = {}
    for e in later:
        d = e.data
        if isinstance(d, EffectStarted):
            keys[(d.step, d.task, d.effect)] = d.key
        elif isinstance(d, EffectFinished) and d.error is None:
            where = (d.step, d.task, d.effect)
            reuse[where] = {
                "name": d.name,
                "key": keys.get(where, ""),
                "result": None if d.result is UNSET else d.result,
                "origin": {"run_id": run_id, "seq": e.seq},
            }
    return reuse
