"""A tool: a typed Python function a model (or a node) may call, described and validated.

``@tool`` turns a function's signature, docstring and pydantic types into a JSON
Schema (``Tool.spec()``: the gateway's ``ToolSpec``, sent in OpenAI's or Anthropic's
shape by the providers), validates the arguments before the call and the result
after it. A parameter annotated ``ToolContext`` receives the call's context (its
idempotency key, run, thread, tenant, user and the secrets the tool declared) and is
not part of the schema. Resilience (timeout, retries, limits, breaker, fallback) is
declared here and applied by the toolbox, after the effect gate (:mod:`.resilience`):
``rate``/``burst`` a token bucket (calls per second), ``concurrency`` calls at once,
``limit_per="tenant"`` one set of limits per tenant, ``limit_wait`` how long a call
may wait for a token or a slot, ``breaker=Breaker(...)``, ``fallback=`` (:mod:`.fallback`).
``dangerous=True`` marks a tool the gate denies unless a policy rule explicitly allows it
(``mainspring.guard.policy``).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import pydantic

from ..models.messages import ToolSpec
from .breaker import Breaker
from .errors import MissingSecretError, ToolArgumentsError, ToolResultError
from .fallback import FallbackSpec, steps


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool is told about its call (declare a parameter ``ctx: ToolContext``)."""

    tool: str
    idempotency_key: str | None = None  # the same on every retry and re-run of this call
    run_id: str | None = None
    thread: str | None = None
    tenant: str | None = None
    user: str | None = None
    attempt: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict)  # only those the tool declared

    def secret(self, name: str) -> str:
        """The value of secret ``name``, or an error saying how to provide it."""
        value = self.secrets.get(name)
        if value is None:
            raise MissingSecretError(
                f"tool {self.tool!r} has no secret {name!r}: declare it "
                f"(@tool(secrets=[{name!r}])) and give the toolbox a source that holds it "
                "(Toolbox(secrets=...); the environment by default)"
            )
        return value


@dataclass(frozen=True, slots=True)
class Retry:
    """Retries of a failed tool call: only errors of ``on`` (declared retryable), with
    exponential backoff and full jitter; every attempt keeps the call's idempotency key."""

    attempts: int = 3
    on: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    backoff: float = 0.2
    max_backoff: float = 5.0


class Tool:
    """A function as a tool. Build with ``@tool`` or ``Tool(fn, ...)``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = 30.0,
        retry: Retry | None = None,
        needs_approval: bool | Callable[[Mapping[str, Any]], bool] = False,
        secrets: Sequence[str] = (),
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        limit_per: Literal["tool", "tenant"] = "tool",
        limit_wait: float | None = None,
        breaker: Breaker | bool | None = None,
        fallback: FallbackSpec = None,
        strict_result: bool = True,
        dangerous: bool = False,
    ) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r}: use 1-64 letters, digits, '_', '-' or '.' "
                "(providers refuse other names); pass name="
            )
        doc = inspect.getdoc(fn) or ""
        summary, arg_docs = _parse_doc(doc)
        self.description = description if description is not None else summary
        self.timeout = timeout
        self.retry = retry
        self.needs_approval = needs_approval
        self.dangerous = bool(dangerous)
        self.secrets = tuple(secrets)
        self.rate, self.burst, self.concurrency = rate, burst, concurrency
        self.limit_per, self.limit_wait = limit_per, limit_wait
        self.breaker: Breaker | None = Breaker() if breaker is True else (breaker or None)
        self.fallback = fallback
        _check_limits(self)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._context_param, self._args_model, returns = _introspect(fn, self.name, arg_docs)
        self._result = None if returns is None else pydantic.TypeAdapter(returns)
        self._validate = self._args_model.__pydantic_validator__.validate_python
        self._strict_result = strict_result
        # A str, int or bool result annotated so is its own JSON: no pydantic round trip
        # (two calls through TypeAdapter).
        self._scalar: Any = returns if returns in (str, int, bool) else None
        self.parameters: dict[str, Any] = _schema(self._args_model)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"

    def spec(self) -> ToolSpec:
        """The definition a model is given (the providers send it in their own shape)."""
        return ToolSpec(self.name, self.description, self.parameters)

    def openai(self) -> dict[str, Any]:
        """OpenAI's Chat Completions shape of the definition."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def anthropic(self) -> dict[str, Any]:
        """Anthropic's Messages shape of the definition."""
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}

    def asks_approval(self, args: Mapping[str, Any]) -> bool:
        approval = self.needs_approval
        return bool(approval(args) if callable(approval) else approval)

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments checked and converted (``ToolArgumentsError`` lists what is wrong,
        in words a model can act on)."""
        try:  # the model's validator itself: model_validate is a Python layer over it
            model = self._validate(args if type(args) is dict else dict(args))
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError.of(self.name, exc.errors(include_url=False)) from None
        return dict(model.__dict__)  # the fields, in order (extra="forbid": nothing else)

    def check_result(self, value: Any) -> Any:
        """The result as JSON data, validated against the return annotation."""
        if self._result is None:
            return _jsonable(value)
        if type(value) is self._scalar:  # a str for a str, exactly: valid, and its own JSON
            return value
        try:
            checked = self._result.validate_python(value, strict=self._strict_result or None)
            return self._result.dump_python(checked, mode="json")
        except pydantic.ValidationError as exc:
            raise ToolResultError(
                f"tool {self.name!r} returned {value!r:.200}, which does not fit its return "
                f"type: {exc.errors(include_url=False)[0]['msg']}; fix the tool or its annotation"
            ) from None

    async def invoke(self, args: Mapping[str, Any], context: ToolContext) -> Any:
        """Call the function with validated ``args`` (and the context, if it asks);
        a sync function runs in a worker thread."""
        kwargs = args if self._context_param is None else {**args, self._context_param: context}
        if self.is_async:
            result = await self.fn(**kwargs)
        else:
            import anyio.to_thread

            result = await anyio.to_thread.run_sync(
                lambda: self.fn(**kwargs), abandon_on_cancel=True
            )
        if type(result) not in _DATA and inspect.isawaitable(result):
            result = await result
        return self.check_result(result)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(fn: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """``@tool`` or ``@tool(timeout=5, retry=Retry(...), needs_approval=True, dangerous=True, ...)``."""
    if fn is not None:
        return Tool(fn, **options)
    return lambda f: Tool(f, **options)


def _check_limits(t: Tool) -> None:
    """Limits that cannot work are refused when the tool is made, naming the fix."""
    if t.rate is not None and t.rate <= 0:
        raise ValueError(f"tool {t.name!r}: rate={t.rate} must be > 0 calls per second")
    if t.burst is not None and (t.burst < 1 or t.rate is None):
        raise ValueError(f"tool {t.name!r}: burst= needs rate= and must be >= 1")
    if t.concurrency is not None and t.concurrency < 1:
        raise ValueError(f"tool {t.name!r}: concurrency={t.concurrency} must be >= 1")
    if t.limit_per not in ("tool", "tenant"):
        raise ValueError(f"tool {t.name!r}: limit_per={t.limit_per!r}: use 'tool' or 'tenant'")
    if t.limit_wait is not None and t.limit_wait < 0:
        raise ValueError(f"tool {t.name!r}: limit_wait={t.limit_wait} must be >= 0 seconds")
    if t.breaker is not None and not isinstance(t.breaker, Breaker):
        raise TypeError(f"tool {t.name!r}: breaker= takes a Breaker(...) or True")
    steps(t.name, t.fallback)


# -- introspection ----------------------------------------------------------------------

_DATA = frozenset((str, int, float, bool, dict, list, type(None)))  # never awaitable
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$", re.M)
_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's description, and per-argument descriptions from an ``Args:``
    section (Google style)."""
    match = _ARGS_HEADER.search(doc)
    if match is None:
        return doc.strip(), {}
    summary = doc[: match.start()].strip()
    args: dict[str, str] = {}
    current = None
    for line in doc[match.end() :].splitlines():
        if line.strip() and not line.startswith(" "):
            break  # the next section (Returns:, Raises:, ...)
        found = _ARG_LINE.match(line)
        if found and len(line) - len(line.lstrip()) <= 8:
            current = found.group(1).lstrip("*")
            args[current] = found.group(2).strip()
        elif current is not None and line.strip():
            args[current] = f"{args[current]} {line.strip()}"
    return summary, args


def _introspect(
    fn: Callable[..., Any], name: str, arg_docs: Mapping[str, str]
) -> tuple[str | None, type[pydantic.BaseModel], Any]:
    """The context parameter's name, the arguments' model, and the return type (None when
    there is none to check)."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise TypeError(f"tool {name!r}: its annotations cannot be resolved ({exc})") from None
    context_param = None
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"tool {name!r}: *{param.name} cannot be described to a model; name each argument"
            )
        default = ... if param.default is param.empty else param.default
        described = pydantic.Field(default, description=arg_docs.get(param.name))
        fields[param.name] = (annotation, described)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    model = pydantic.create_model(f"{_camel(name)}Args", __config__=config, **fields)
    returns = hints.get("return", inspect.Signature.empty)
    if returns in (inspect.Signature.empty, Any):
        result = None
    else:
        if typing.get_origin(returns) in (Awaitable, typing.Coroutine):
            returns = typing.get_args(returns)[-1]
        result = None if returns is type(None) else returns
    return context_param, model, result


def _schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_.\-]", name)) or "Tool"


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value
