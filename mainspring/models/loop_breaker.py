"""The loop breaker: a run that makes the same call again and again is stopped.

A before-hook: it remembers each run's last ``window`` calls (kind, name, and a
hash of the arguments) and denies a call when ``max_repeats`` of them were this
very call. With the default ``window=max_repeats`` that is "the same call N times
in a row"; a wider window also catches a run going round A, B, A, B.

The memory is the process's own (a resumed run starts afresh) and bounded:
the most recently active ``max_runs`` runs are remembered.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import msgspec

from ..engine.gate import Deny, Effect
from .errors import LoopDetectedError

_encode = msgspec.json.Encoder(enc_hook=repr, order="deterministic").encode


class LoopBreaker:
    """Deny a run's call when ``max_repeats`` of its last ``window`` calls were the same
    (kind, name and arguments); counts the effect kinds in ``kinds`` (None: all)."""

    name = "loop-breaker"

    def __init__(
        self,
        max_repeats: int = 3,
        window: int | None = None,
        *,
        kinds: Iterable[str] | None = ("model", "tool"),
        max_runs: int = 10_000,
    ) -> None:
        if max_repeats < 1:
            raise ValueError(f"LoopBreaker max_repeats={max_repeats}: give 1 or more")
        window = max_repeats if window is None else window
        if window < max_repeats:
            raise ValueError(
                f"LoopBreaker window={window} is smaller than max_repeats={max_repeats}: "
                "a window holds the calls compared, so give window >= max_repeats"
            )
        self.max_repeats = max_repeats
        self.window = window
        self.kinds = None if kinds is None else frozenset(kinds)
        self.max_runs = max_runs
        # run id -> its last calls as (effect key, fingerprint), the most recent run last
        self._runs: collections.OrderedDict[str, collections.deque[tuple[str, int]]] = (
            collections.OrderedDict()
        )

    def before(self, effect: Effect) -> Deny | None:
        if self.kinds is not None and effect.kind not in self.kinds:
            return None
        calls = self._calls(effect.run_id)
        if any(key == effect.key for key, _ in calls):
            return None  # the same effect again (a retry, a resume): not a new call
        fingerprint = hash((effect.kind, effect.name, _encode(effect.args)))
        seen = sum(1 for _, f in calls if f == fingerprint)
        if seen >= self.max_repeats:
            return Deny(
                f"loop detected: {effect.name!r} was called {seen} times with the same "
                f"arguments in the run's last {len(calls)} calls; "
                f"{LoopDetectedError.what_to_do}"
            )
        calls.append((effect.key, fingerprint))
        return None

    def _calls(self, run_id: str) -> collections.deque[tuple[str, int]]:
        runs = self._runs
        calls = runs.get(run_id)
        if calls is None:
            calls = runs[run_id] = collections.deque(maxlen=self.window)
            if len(runs) > self.max_runs:
                runs.popitem(last=False)
        else:
            runs.move_to_end(run_id)
        return calls
