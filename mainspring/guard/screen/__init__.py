"""Screening of what enters a model's context (docs/screening.md): output validation
(size caps, content kinds, schemas) and a prompt-injection screen (heuristics and a
local classifier whose weights ship with the package), per source, as a gate hook.

    from mainspring.guard.screen import Rule, Screen
    screen = Screen({"tool:web_search": Rule(on_flag="placeholder"), "user": Rule(on_flag="stop")})
    Runtime.open(url, gates=[screen], models=..., tools=...)

Names load on first use: importing this package loads neither the classifier nor its data.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .classifier import Classifier
    from .errors import QuarantinedError, ScreenConfigError, ScreenError, ScreenValidationError
    from .hook import Quarantined, Screen
    from .rules import Rule
    from .screen import Finding, Screener, Verdict

_NAMES = {
    "Classifier": "classifier",
    "Finding": "screen",
    "Quarantined": "hook",
    "QuarantinedError": "errors",
    "Rule": "rules",
    "Screen": "hook",
    "ScreenConfigError": "errors",
    "ScreenError": "errors",
    "ScreenValidationError": "errors",
    "Screener": "screen",
    "Verdict": "screen",
}

__all__ = [
    "Classifier",
    "Finding",
    "Quarantined",
    "QuarantinedError",
    "Rule",
    "Screen",
    "ScreenConfigError",
    "ScreenError",
    "ScreenValidationError",
    "Screener",
    "Verdict",
]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
