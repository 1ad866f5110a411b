"""How effects are recognised as tool or model calls, and how their inputs and outputs are captured.

Effect naming (``ctx.step(name, fn)``; ``ctx.tool`` and ``ctx.model`` should follow it):

* ``tool:<name>`` or ``tools.<name>``: a tool call, traced as ``execute_tool <name>``;
* ``model:<name>`` or ``models.<name>``: a model call, traced as ``chat <name>``;
* anything else: a plain effect, traced under its own name.

Usage: an effect whose result is a dict may report what it consumed, and a
result with a ``usage`` dict is a model call whatever its name::

    {"usage": {"input_tokens": 812, "output_tokens": 96},   # or prompt_/completion_tokens
     "model": "gpt-x-mini", "provider": "openai", "cost_usd": 0.0012, ...}

(the gateway's ``ctx.model`` records a ModelResponse: ``usage`` also holds
``cached_tokens``, ``reasoning_tokens`` and ``cost``, and ``ttft`` its time to first token).

Tokens and cost are then counted by model and tenant (``metadata={"tenant": ...}``
on the run). A model gateway only has to return that shape from its effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import orjson

EffectKind = Literal["tool", "model", "effect"]
AttrValue = str | bool | int | float | tuple[str, ...]

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
    cached_tokens: int = 0  # of input_tokens, from the provider's prompt cache
    reasoning_tokens: int = 0  # of output_tokens
    ttft: float | None = None  # seconds to the first streamed token


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_of(result: Any) -> Usage | None:
    """The usage a model-call result reports (see the module docstring), if any."""
    if not isinstance(result, Mapping):
        return None
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return None
    cost = result.get("cost_usd", usage.get("cost_usd", usage.get("cost")))
    ttft = result.get("ttft")
    model = result.get("model")
    provider = result.get("provider")
    return Usage(
        model if isinstance(model, str) else None,
        provider if isinstance(provider, str) else None,
        _int(usage.get("input_tokens", usage.get("prompt_tokens"))),
        _int(usage.get("output_tokens", usage.get("completion_tokens"))),
        float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        _int(usage.get("cached_tokens")),
        _int(usage.get("reasoning_tokens")),
        float(ttft) if isinstance(ttft, int | float) and not isinstance(ttft, bool) else None,
    )


Redactor = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class Capture:
    """Whether inputs and outputs go into span attributes, and how they are cleaned and capped.

    ``redact(attribute_name, value)`` returns what may be recorded (e.g. with
    secrets masked); it runs off the hot path, in the telemetry thread. The
    attributes: ``mainspring.input`` (a run's), ``mainspring.arg`` and
    ``mainspring.update`` (a node's), ``gen_ai.output.messages`` (a model's
    reply, as GenAI output messages), ``gen_ai.tool.call.result``,
    ``mainspring.effect.result`` (other effects), ``mainspring.interrupt.payload``
    and ``.value``, ``mainspring.data`` (emitted). The JSON text is cut to
    ``max_bytes``; GenAI messages are cut inside their strings, so they stay JSON.
    """

    enabled: bool = False
    redact: Redactor | None = None
    max_bytes: int = 4096

    def text(self, attribute: str, value: Any, *, as_json: bool = False) -> str | None:
        """``value`` as the attribute's text; ``as_json``: always valid JSON (backends parse it)."""
        if not self.enabled:
            return None
        if self.redact is not None:
            value = self.redact(attribute, value)
        if as_json:
            return cap_json(value, self.max_bytes)
        raw = value if isinstance(value, str) else json_text(value)
        return cap(raw, self.max_bytes)


def json_text(value: Any) -> str:
    """``value`` as JSON text (``repr`` for what JSON cannot hold)."""
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


def cap_json(value: Any, max_bytes: int) -> str:
    """``value`` as JSON of at most ``max_bytes``, its long strings cut so that it stays valid."""
    raw = json_text(value)
    size = limit = len(raw.encode())
    while size > max_bytes and limit > 16:
        limit //= 2
        raw = json_text(_cap_strings(value, limit))
        size = len(raw.encode())
    return raw if size <= max_bytes else cap(raw, max_bytes)  # many small values: plain cut


def _cap_strings(value: Any, max_bytes: int) -> Any:
    if isinstance(value, str):
        return cap(value, max_bytes)
    if isinstance(value, Mapping):
        return {k: _cap_strings(v, max_bytes) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cap_strings(v, max_bytes) for v in value]
    return value
