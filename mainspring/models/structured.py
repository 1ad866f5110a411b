"""Structured output: a pydantic type (or a JSON schema) as the answer's shape, validated.

``output_spec(Invoice)`` is the :class:`OutputSpec` a provider sends (a schema fit for
OpenAI's strict mode: closed objects, every property required, ``$ref`` inlined
unless recursive; ``strict=False`` when the type cannot be strict, e.g. a free-form
dict). A type whose schema is not an object (``list[int]``) is wrapped as
``{"value": ...}`` (strict mode wants an object) and unwrapped by ``parse_output``.

``parse_output(Invoice, text)`` finds the JSON in the model's text (bare, in a
```json fence, or inside prose) and validates it, raising :class:`StructuredOutputError`
(an ``OutputValidationError``) that lists what was wrong. ``complete_structured``
asks again with those errors quoted, at most ``repairs`` times.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, overload

import msgspec
import pydantic

from ._schema import check_schema, strict_schema
from .errors import ModelError, OutputValidationError
from .messages import Message, ModelResponse, OutputSpec, Usage, assistant, user

T = TypeVar("T")

WRAP_KEY: Final = "value"
_FENCE: Final = re.compile(r"```[ \t]*(?:json|JSON|jsonc)?[ \t]*\n?(.*?)```", re.DOTALL)
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]+")


class StructuredOutputError(OutputValidationError):
    """The model's output did not fit the type: ``errors`` says each thing that was wrong."""

    def __init__(
        self, message: str, *, errors: Sequence[str] = (), text: str = "", **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.errors = list(errors)
        self.text = text  # the output that failed
        self.usage = Usage()  # what every attempt used, set by complete_structured
        self.attempts = 0


@functools.lru_cache(maxsize=256)
def _cached_adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return _cached_adapter(tp)  # building one costs about a millisecond
    except TypeError:  # an unhashable type, e.g. Annotated with a dict in it
        return pydantic.TypeAdapter(tp)


def _shape(tp: Any) -> tuple[dict[str, Any], bool, bool]:
    """(the strict schema of ``tp``, whether strict mode takes it, whether it is wrapped)."""
    raw = tp if isinstance(tp, dict) else _adapter(tp).json_schema()
    schema, strict = strict_schema(raw)
    wrapped = schema.get("type") != "object" and "properties" not in schema
    if wrapped:
        defs = schema.pop("$defs", None)
        schema = {"type": "object", "properties": {WRAP_KEY: schema}, "required": [WRAP_KEY],
                  "additionalProperties": False}  # fmt: skip
        if defs:
            schema["$defs"] = defs  # references resolve from the root
    return schema, strict, wrapped


def output_spec(tp: Any, *, name: str | None = None) -> OutputSpec:
    """The :class:`OutputSpec` asking for ``tp``: a pydantic model, any type pydantic can
    validate (dataclass, TypedDict, ``list[X]``), or a JSON schema dict."""
    schema, strict, _wrapped = _shape(tp)
    title = name or (tp.get("title") if isinstance(tp, dict) else getattr(tp, "__name__", None))
    return OutputSpec(_NAME_CHARS.sub("_", str(title or "output"))[:64] or "output", schema, strict)


def extract_json(text: str) -> Any:
    """The JSON value in a model's ``text``: all of it, the first fenced block that parses,
    or the first object or array that parses inside prose; ValueError if none."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            return json.loads(block.strip())
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return value
    raise ValueError("no JSON object or array in the output")


@overload
def parse_output(tp: type[T], text: str) -> T: ...
@overload
def parse_output(tp: Any, text: str) -> Any: ...
def parse_output(tp: Any, text: str) -> Any:
    """``text`` (the model's answer) as an instance of ``tp`` (JSON data for a schema dict);
    raises StructuredOutputError listing every problem."""
    try:
        data = extract_json(text)
    except ValueError as exc:
        preview = text if len(text) <= 200 else text[:200] + "..."
        raise _error(tp, [f"{exc}: {preview!r}"], text) from None
    return validate_output(tp, data, text=text)


def validate_output(tp: Any, data: Any, *, text: str = "") -> Any:
    """JSON ``data`` validated as ``tp`` (unwrapped from ``{"value": ...}`` when wrapped)."""
    if _shape(tp)[2] and isinstance(data, dict) and list(data) == [WRAP_KEY]:
        data = data[WRAP_KEY]
    if isinstance(tp, dict):
        problems = check_schema(tp, data)
        if problems:
            raise _error(tp, problems, text)
        return data
    try:
        return _adapter(tp).validate_python(data)
    except pydantic.ValidationError as exc:
        raise _error(tp, [_describe(e) for e in exc.errors()], text) from None


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(the whole output)"
    got = error.get("input")
    shown = json.dumps(got, default=str)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    return f"{where}: {error['msg']} (got {shown})"


def _error(tp: Any, problems: list[str], text: str) -> StructuredOutputError:
    name = tp.get("title", "the schema") if isinstance(tp, dict) else getattr(tp, "__name__", tp)
    listed = "\n".join(f"- {p}" for p in problems)
    return StructuredOutputError(
        f"the model's output does not match {name}:\n{listed}", errors=problems, text=text
    )


def repair_prompt(error: StructuredOutputError) -> str:
    listed = "\n".join(f"- {p}" for p in error.errors)
    return (
        "Your answer did not match the required JSON schema:\n"
        f"{listed}\n"
        "Answer again with only the corrected JSON, no other text."
    )


def as_json_data(value: Any) -> Any:
    """An instance as JSON data (what ``ModelResponse.output`` holds)."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return pydantic.TypeAdapter(type(value)).dump_python(value, mode="json")


async def complete_structured(
    call: Callable[[list[Message]], Awaitable[ModelResponse]],
    messages: Sequence[Message],
    tp: Any,
    repairs: int = 2,
) -> tuple[Any, ModelResponse, int]:
    """Call the model and parse its answer as ``tp``; on invalid output, show it its answer
    and the errors and ask again, at most ``repairs`` times.

    Returns (instance, the last response with ``output`` set and the usage of every
    attempt summed, attempts made). Raises StructuredOutputError (an
    OutputValidationError) with the last errors, ``usage`` and ``attempts``.
    """
    if repairs < 0:
        raise ValueError(f"repairs must be 0 or more, not {repairs}")
    history = list(messages)
    usage = Usage()
    for attempt in range(1, repairs + 2):
        try:
            response = await call(history)
        except ModelError as exc:  # the attempts before it were paid for too
            if attempt > 1:
                exc.usage = usage + (exc.usage or Usage())
            raise
        usage = usage + response.usage
        try:
            if response.output is not None and not response.text:
                instance = validate_output(tp, response.output)
            else:
                instance = parse_output(tp, response.text)
        except StructuredOutputError as exc:
            if attempt > repairs:
                final = StructuredOutputError(
                    f"after {attempt} attempts, {exc}", errors=exc.errors, text=exc.text
                )
                final.usage, final.attempts = usage, attempt
                raise final from None
            history += [assistant(response.text), user(repair_prompt(exc))]
            continue
        done = msgspec.structs.replace(response, usage=usage, output=as_json_data(instance))
        return instance, done, attempt
    raise AssertionError("unreachable: the loop returns or raises")
