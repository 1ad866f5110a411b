"""The gate hook that keeps secret values out of every effect's recorded arguments.

A node may pass a secret to an effect itself (``ctx.tool("charge", key=...)``, a prompt
that quotes one): the gate's default masking knows secret-looking argument *names*;
this hook replaces the *values* (those handed to tools in this process, and a tool's
own declared secrets, looked up now so that a fresh process knows them before its first
call). ``Toolbox`` adds it to its gate hooks when one of its tools declares a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...engine.gate import Effect
from .scrub import HANDED, HandedValues


class SecretArgs:
    """``redact(effect, args)``: the arguments with secret values replaced;
    ``redact_text(effect, text)``: the same for what the gate records about the effect."""

    name = "secrets"

    def __init__(
        self,
        declared: Callable[[str], Mapping[str, str]],
        values: HandedValues = HANDED,
    ) -> None:
        self._declared = declared  # a tool's name -> its declared secrets' values now
        self._values = values

    def redact(self, effect: Effect, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self._learn(effect)
        if not self._values or not args:
            return args
        scrubbed: Mapping[str, Any] = self._values.scrubber.value(dict(args))
        return scrubbed

    def redact_text(self, effect: Effect, text: str) -> str:
        """A decision's reason or a denial's message with secret values replaced (a rule
        that quoted an argument holding one, say)."""
        self._learn(effect)  # a denied call's tool never ran: its secrets are learnt here
        if not self._values or not text:
            return text
        return self._values.scrubber.text(text)

    def _learn(self, effect: Effect) -> None:
        if effect.kind == "tool" and effect.name.startswith("tool:"):
            own = self._declared(effect.name[5:])
            if own:
                self._values.add(own)
