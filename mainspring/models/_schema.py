"""JSON schemas for structured output: made fit for strict mode, and checked without a library.

``strict_schema`` rewrites a schema (as pydantic makes them) the way OpenAI's strict
mode wants it: every object closed (``additionalProperties: false``) with every
property required, ``oneOf`` as ``anyOf``, no ``default`` or ``discriminator``, and
``$ref`` inlined except where a type refers to itself (those stay in ``$defs``).

``check_schema`` validates data against the subset of JSON Schema a structured-output
schema uses (type, properties, required, additionalProperties, items, enum, const,
anyOf/oneOf, minimum/maximum, min/maxLength, min/maxItems), for a schema given as a
dict, when there is no pydantic type to validate with.
"""

from __future__ import annotations

from typing import Any, Final

_DROP: Final = frozenset({"default", "discriminator"})


def strict_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the strict form of ``schema``, whether strict mode can take it)."""
    defs: dict[str, Any] = dict(schema.get("$defs", {}))
    kept: dict[str, Any] = {}
    fit = [True]

    def walk(node: Any, inlining: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, inlining) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in inlining:  # recursive: keep the reference, and its definition
                if name not in kept:
                    kept[name] = {}
                    kept[name] = walk(defs[name], (*inlining, name))
                return {"$ref": ref}
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**defs[name], **siblings}, (*inlining, name))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key == "$defs":
                continue
            if key in ("properties", "patternProperties"):
                out[key] = {k: walk(v, inlining) for k, v in value.items()}
            else:
                out["anyOf" if key == "oneOf" else key] = walk(value, inlining)
        if out.get("type") == "object" or "properties" in out:
            extra = out.get("additionalProperties")
            if extra not in (None, False) or "patternProperties" in out:
                fit[0] = False  # a free-form map: strict mode cannot say it
            else:
                out["additionalProperties"] = False
                out["properties"] = out.get("properties", {})
                out["required"] = list(out["properties"])
        return out

    result = walk(schema, ())
    if kept:
        result["$defs"] = kept
    return result, fit[0]


_TYPES: Final = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check_schema(schema: dict[str, Any], data: Any) -> list[str]:
    """What is wrong with ``data`` for ``schema``, one line each (empty: it fits)."""
    problems: list[str] = []
    _check(schema, data, "", schema.get("$defs", {}), problems)
    return problems


def _check(schema: Any, data: Any, path: str, defs: dict[str, Any], out: list[str]) -> None:
    if not isinstance(schema, dict):
        return
    where = path or "(the whole output)"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        _check(defs.get(ref.removeprefix("#/$defs/")), data, path, defs, out)
    for key in ("anyOf", "oneOf"):
        if key in schema and not any(
            not _errors(option, data, path, defs) for option in schema[key]
        ):
            out.append(f"{where}: matches none of the allowed shapes (got {_show(data)})")
            return
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(_TYPES.get(t, lambda v: True)(data) for t in allowed):
            out.append(f"{where}: should be {' or '.join(allowed)} (got {_show(data)})")
            return
    if "enum" in schema and data not in schema["enum"]:
        out.append(f"{where}: should be one of {schema['enum']!r} (got {_show(data)})")
    if "const" in schema and data != schema["const"]:
        out.append(f"{where}: should be {schema['const']!r} (got {_show(data)})")
    if isinstance(data, dict):
        _check_object(schema, data, path, defs, out)
    elif isinstance(data, list):
        _check_sized(schema, len(data), "minItems", "maxItems", "items", where, out)
        for i, item in enumerate(data):
            _check(schema.get("items"), item, f"{path}.{i}" if path else str(i), defs, out)
    elif isinstance(data, str):
        _check_sized(schema, len(data), "minLength", "maxLength", "characters", where, out)
    elif isinstance(data, int | float) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            out.append(f"{where}: should be at least {schema['minimum']} (got {data})")
        if "maximum" in schema and data > schema["maximum"]:
            out.append(f"{where}: should be at most {schema['maximum']} (got {data})")


def _check_object(
    schema: dict[str, Any], data: dict[str, Any], path: str, defs: dict[str, Any], out: list[str]
) -> None:
    props: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in data:
            out.append(f"{path + '.' if path else ''}{name}: Field required")
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        if name in props:
            _check(props[name], value, sub, defs, out)
        elif schema.get("additionalProperties") is False:
            out.append(f"{sub}: is not allowed (no such property)")
        elif isinstance(schema.get("additionalProperties"), dict):
            _check(schema["additionalProperties"], value, sub, defs, out)


def _check_sized(
    schema: dict[str, Any], size: int, low: str, high: str, unit: str, where: str, out: list[str]
) -> None:
    if low in schema and size < schema[low]:
        out.append(f"{where}: should have at least {schema[low]} {unit} (has {size})")
    if high in schema and size > schema[high]:
        out.append(f"{where}: should have at most {schema[high]} {unit} (has {size})")


def _errors(schema: Any, data: Any, path: str, defs: dict[str, Any]) -> list[str]:
    found: list[str] = []
    _check(schema, data, path, defs, found)
    return found


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
