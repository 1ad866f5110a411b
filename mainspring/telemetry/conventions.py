"""How effects are recognised as tool or model calls, and how their inputs and outputs are captured.

Effect naming (``ctx.step(name, fn)``; ``ctx.tool`` and ``ctx.model`` should follow it):

* ``tool:<name>`` or ``tools.<name>``: a tool call, traced as ``execute_tool <name>``;
* ``model:<name>`` or ``models.<name>``: a model call, traced as ``chat <name>``;
* anything else: a plain effect, traced under its own name.

Usage: an effect whose result is a dict may report what it consumed, and a
result with a ``usage`` dict is a model call whatever its name::

    {"usage": {"input_tokens": 812, "output_tokens": 96},   # or prompt_/completion_tokens
     "model": "gpt-x-mini", "provider": "openai", "cost_usd": 0.0012, ...}

Tokens and cost are then counted by model and tenant (``metadata={"tenant": ...}``
on the run). A model gateway only has to return that shape from its effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import orjson

EffectKind = Literal["tool", "model", "effect"]
AttrValue = str | bool | int | float

_TOOL: Final = ("tool:", "tools.")
_MODEL: Final = ("model:", "models.")


def effect_kind(name: str, result: Any = None) -> tuple[EffectKind, str]:
    """``(kind, short name)`` of an effect, from its name and (if known) its result."""
    for prefix in _TOOL:
        if name.startswith(prefix):
            return "tool", name[len(prefix) :]
    for prefix in _MODEL:
        if name.startswith(prefix):
            return "model", name[len(prefix) :]
    if isinstance(result, Mapping) and isinstance(result.get("usage"), Mapping):
        return "model", name
    return "effect", name


class Usage(NamedTuple):
    model: str | None
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_of(result: Any) -> Usage | None:
    """The usage a model-call result reports (see the module docstring), if any."""
    if not isinstance(result, Mapping):
        return None
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return None
    cost = result.get("cost_usd", usage.get("cost_usd"))
    model = result.get("model")
    provider = result.get("provider")
    return Usage(
        model if isinstance(model, str) else None,
        provider if isinstance(provider, str) else None,
        _int(usage.get("input_tokens", usage.get("prompt_tokens"))),
        _int(usage.get("output_tokens", usage.get("completion_tokens"))),
        float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
    )


Redactor = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class Capture:
    """Whether inputs and outputs go into span attributes, and how they are cleaned and capped.

    ``redact(attribute_name, value)`` returns what may be recorded (e.g. with
    secrets masked); it runs off the hot path, in the telemetry thread. The
    JSON text is cut to ``max_bytes``.
    """

    enabled: bool = False
    redact: Redactor | None = None
    max_bytes: int = 4096

    def text(self, attribute: str, value: Any) -> str | None:
        if not self.enabled:
            return None
        if self.redact is not None:
            value = self.redact(attribute, value)
        raw = value if isinstance(value, str) else _dumps(value)
        return cap(raw, self.max_bytes)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def cap(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, saying how much was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    marker = f"...[{len(data)} bytes]"
    keep = max(0, max_bytes - len(marker.encode()))
    return data[:keep].decode(errors="ignore") + marker
