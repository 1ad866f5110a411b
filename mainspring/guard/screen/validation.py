"""Output validation: a value's size, content kind and schema against a source's rule.
Each check returns a message that says what was found and what the rule allows (or None)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Final

import msgspec

from .errors import ScreenConfigError
from .rules import Rule

_BASE64_BLOB: Final = re.compile(r"[A-Za-z0-9+/=\s]{256,}")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def kind_of(value: Any) -> str:
    """``binary`` (bytes, or text with control characters), ``base64`` (a text that is one
    long base64 blob), ``text``, or ``json`` (any other JSON value)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary"
    if isinstance(value, str):
        if _CONTROL.search(value) and len(_CONTROL.findall(value)) > max(2, len(value) // 100):
            return "binary"
        if len(value) >= 256 and " " not in value.strip() and _BASE64_BLOB.fullmatch(value.strip()):
            return "base64"
        return "text"
    return "json"


def size_of(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    try:
        return len(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        return len(repr(value).encode())


def validate(value: Any, rule: Rule, source: str) -> str | None:
    """What is wrong with ``value`` for ``source`` under ``rule``, or None."""
    size = size_of(value)
    if size > rule.max_bytes:
        return f"{source} gave {size} bytes, over its cap of {rule.max_bytes} (Rule(max_bytes=))"
    kind = kind_of(value)
    if kind not in rule.kinds:
        return f"{source} gave {kind} content; its rule lets in {sorted(rule.kinds)} (Rule(kinds=))"
    if rule.schema is not None:
        return _schema_error(value, rule.schema, source)
    return None


def _schema_error(value: Any, schema: Any, source: str) -> str | None:
    if isinstance(schema, dict):
        validator = _json_schema(msgspec.json.encode(schema))
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if not errors:
            return None
        first = errors[0]
        where = "/".join(map(str, first.path)) or "(top)"
        return f"{source} does not match its JSON Schema at {where}: {first.message}"
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(schema).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(top)"
        name = getattr(schema, "__name__", repr(schema))
        return f"{source} does not match {name} at {where}: {first['msg']}"
    return None


@lru_cache(maxsize=64)
def _json_schema(encoded: bytes) -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - the mcp extra has it
        raise ScreenConfigError(
            "a JSON Schema rule needs the jsonschema package: pip install 'mainspring[mcp]' "
            "(or give a pydantic model as Rule(schema=))"
        ) from exc
    schema = msgspec.json.decode(encoded)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check_schema(schema: Any) -> None:
    """Fail now, with a clear message, on a schema that cannot be used."""
    if schema is None:
        return
    if isinstance(schema, dict):
        try:
            _json_schema(msgspec.json.encode(schema))
        except ScreenConfigError:
            raise
        except Exception as exc:
            raise ScreenConfigError(f"Rule(schema=...) is not a valid JSON Schema: {exc}") from exc
        return
    from pydantic import TypeAdapter

    try:
        TypeAdapter(schema)
    except Exception as exc:
        raise ScreenConfigError(
            f"Rule(schema={schema!r}) is neither a JSON Schema dict nor a type pydantic "
            f"validates: {exc}"
        ) from exc


def texts_of(value: Any) -> Iterator[str]:
    """The strings inside a value (a tool's JSON result): what the injection screen reads."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and len(k) > 24:  # a long key can carry words too
                yield k
            yield from texts_of(v)
    elif isinstance(value, list | tuple):
        for v in value[:10_000]:
            yield from texts_of(v)
    elif value is not None and not isinstance(value, int | float | bytes | bytearray):
        # A pydantic model, a dataclass, a Struct (a node's own effect may return one):
        # screened by the JSON it would be recorded as.
        dump = getattr(value, "model_dump", None)
        try:
            data = dump(mode="json") if callable(dump) else msgspec.to_builtins(value)
        except Exception:  # not convertible: its repr is what a model would be shown
            data = repr(value)
        yield from texts_of(data)
