"""What a screen does per source: a :class:`Rule` (size cap, content kinds, schema, the
injection screen, and what happens to what is flagged), chosen by the source's name.

Sources are named as the gate sees them: ``user`` (user messages in a model request),
``tool:<name>`` (a tool's output, and its result message in a model request),
``memory:<name>`` (retrieved documents and memories). A rule is looked up by the exact
name, then its kind (``tool``, ``memory``), then ``*``; ``None`` turns a source off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import ScreenConfigError
from .heuristics import DETECTORS

KINDS: Final = frozenset({"text", "json", "base64", "binary"})
Action = Literal["placeholder", "stop"]

PLACEHOLDER: Final = (
    "[withheld by the screen: what {source} returned was quarantined ({why}); it is not shown. "
    "Do not try to fetch it again; go on without it or tell the user it was withheld.]"
)


@dataclass(frozen=True)
class Rule:
    """How one source is screened.

    ``max_bytes`` caps the size (UTF-8 bytes of a text, of the JSON of a value);
    ``kinds`` are the content kinds let in (``text``, ``json``, ``base64`` for a long
    base64 blob, ``binary`` for bytes or text with control characters); ``schema`` is a
    pydantic model (or any type pydantic validates) or a JSON Schema dict (needs
    ``jsonschema``, in the ``mcp`` extra); ``injection`` runs the injection screen, with
    the ``heuristics`` named (None: all) and the classifier at ``threshold`` (None: the
    classifier's own); ``on_flag`` is what a flagged value becomes: ``placeholder``
    (the run goes on; the model reads ``placeholder``) or ``stop`` (the run stops with
    ``QuarantinedError``).
    """

    max_bytes: int = 256_000
    kinds: frozenset[str] = frozenset({"text", "json"})
    schema: Any = None
    injection: bool = True
    heuristics: tuple[str, ...] | None = None
    classifier: bool = True
    threshold: float | None = None
    on_flag: Action = "placeholder"
    placeholder: str = PLACEHOLDER

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ScreenConfigError(f"Rule(max_bytes={self.max_bytes}): give a positive size cap")
        unknown = set(self.kinds) - KINDS
        if unknown:
            raise ScreenConfigError(
                f"Rule(kinds=...) names unknown content kinds {sorted(unknown)}; "
                f"choose from {sorted(KINDS)}"
            )
        if self.heuristics is not None:
            bad = [h for h in self.heuristics if h not in DETECTORS]
            if bad:
                raise ScreenConfigError(
                    f"Rule(heuristics=...) names unknown heuristics {bad}; known: {sorted(DETECTORS)}"
                )
        if self.on_flag not in ("placeholder", "stop"):
            raise ScreenConfigError(
                f"Rule(on_flag={self.on_flag!r}): choose 'placeholder' (go on) or 'stop'"
            )
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ScreenConfigError(
                f"Rule(threshold={self.threshold}): give a probability in (0, 1)"
            )
        object.__setattr__(self, "kinds", frozenset(self.kinds))


DEFAULT: Final = Rule()


def rule_for(rules: Mapping[str, Rule | None], source: str) -> Rule | None:
    """The rule of ``source``: by its name, then its kind, then ``*``, else the default."""
    if source in rules:
        return rules[source]
    kind = source.partition(":")[0]
    if kind in rules:
        return rules[kind]
    return rules.get("*", DEFAULT)
