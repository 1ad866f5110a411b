"""State schemas and reducers: how a node's update is folded into the run's state.

A graph's state type is a ``TypedDict``, a dataclass or a pydantic model. Each
key has a reducer: ``replace`` by default, or one given with ``Annotated``::

    class Chat(TypedDict):
        messages: Annotated[list[str], append]

Internally the state is a plain ``dict`` that is never mutated in place:
applying an update builds a new dict, so a node's view stays stable while
parallel nodes run. Reducers must return new values, never mutate ``old``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar, get_args, get_origin, get_type_hints

import msgspec

from .errors import SerializationError, StateError

T = TypeVar("T")
Reducer = Callable[[Any, Any], Any]


def replace(old: Any, new: Any) -> Any:
    """The default reducer: the update replaces the value."""
    return new


def append(old: Any, new: Any) -> list[Any]:
    """Append to a list: a list or tuple update is concatenated, anything else appended as one item."""
    base = [] if old is None else old
    if isinstance(new, list | tuple):
        return [*base, *new]
    return [*base, new]


def merge(old: Any, new: Any) -> dict[str, Any]:
    """Shallow-merge a dict update into the current dict."""
    if old is None:
        return dict(new)
    return {**old, **new}


_BUILTIN_REDUCERS: Final[dict[Reducer, str]] = {
    replace: "replace",
    append: "append",
    merge: "merge",
}
_MISSING: Final = object()
_PLAIN_SCALARS: Final = (str, int, float, bool, type(None))


def reducer_name(fn: Reducer) -> str:
    name = _BUILTIN_REDUCERS.get(fn)
    return name if name is not None else str(getattr(fn, "__qualname__", repr(fn)))


class FieldSpec(msgspec.Struct):
    name: str
    annotation: Any
    reducer: Reducer
    default: Any = _MISSING
    reviver: Callable[[Any], Any] | None = None  # JSON -> typed value, where JSON loses the type
    # Checks a value a node sets: returns pydantic's ValidationError, or None if the value
    # fits. None: anything goes.
    validator: Callable[[Any], Any] | None = None


class StateSchema(Generic[T]):
    """What a state type allows, and how to build, update, view and revive it."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self.kind = _state_kind(cls)
        self.fields: dict[str, FieldSpec] = _read_fields(cls, self.kind)
        self._replace_only = all(f.reducer is replace for f in self.fields.values())
        self._has_validators = any(f.validator is not None for f in self.fields.values())
        self._pydantic_validators: dict[str, Any] = {}
        if self.kind == "pydantic":
            from pydantic import TypeAdapter

            self._pydantic_validators = {
                name: TypeAdapter(spec.annotation) for name, spec in self.fields.items()
            }

    @property
    def name(self) -> str:
        return self.cls.__name__

    # -- building -----------------------------------------------------------------

    def initial(self, value: Any) -> dict[str, Any]:
        """Validate a run's input and return the internal state dict."""
        if self.kind == "pydantic":
            from pydantic import ValidationError

            try:
                model = value if isinstance(value, self.cls) else self.cls.model_validate(value)  # type: ignore[attr-defined]
            except ValidationError as exc:
                raise StateError(f"input does not fit {self.name}: {exc}") from None
            return {name: getattr(model, name) for name in self.fields}
        if self.kind == "dataclass" and isinstance(value, self.cls):
            return {name: getattr(value, name) for name in self.fields}
        if value is None:
            value = {}
        # type() first: isinstance of an ABC is a Python-level __instancecheck__ (~1.3k
        # instructions), and a run's input is a dict nearly always.
        if type(value) is not dict and not isinstance(value, Mapping):
            raise StateError(
                f"input must be a mapping of {self.name} fields, got {type(value).__name__}"
            )
        self._check_keys(value, "the input")
        state: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if name in value:
                check = spec.validator
                if check is not None and (invalid := check(value[name])) is not None:
                    raise self._invalid(spec, invalid, "the input")
                state[name] = value[name]
            elif spec.default is not _MISSING:
                state[name] = spec.default() if callable(spec.default) else spec.default
            elif self.kind == "dataclass":
                raise StateError(f"input is missing the required field {name!r} of {self.name}")
        return state

    def initial_from_json(self, value: Any) -> dict[str, Any]:
        """``initial`` of an input read back from the journal: typed fields revived first."""
        if isinstance(value, Mapping) and self.kind != "pydantic":
            value = self.revive_update(value)
        return self.initial(value)

    def _check_keys(self, update: Mapping[str, Any], where: str) -> None:
        for key in update:
            if key not in self.fields:
                known = ", ".join(sorted(self.fields)) or "(none)"
                raise StateError(
                    f"{where} sets {key!r}, which is not a field of {self.name}; "
                    f"known fields: {known}"
                )

    # -- updating -----------------------------------------------------------------

    def apply(
        self, state: dict[str, Any], updates: list[tuple[str, Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """Fold the updates of one superstep, in order, into a new state dict.

        ``updates`` pairs each update with the node that wrote it; two nodes that
        write the same replace-key in one superstep are an error, not a race.
        """
        if self._replace_only and len(updates) == 1 and updates[0][1].keys() <= self.fields.keys():
            return {**state, **updates[0][1]}  # the common case: one writer, plain fields
        new = dict(state)
        written: dict[str, str] | None = {} if len(updates) > 1 else None
        fields = self.fields
        for node, update in updates:
            for key, value in update.items():
                spec = fields.get(key)
                if spec is None:
                    self._check_keys(update, f"node {node!r}")
                    raise AssertionError("unreachable")
                if written is not None and spec.reducer is replace:
                    other = written.get(key)
                    if other is not None:
                        raise StateError(
                            f"nodes {other!r} and {node!r} both set {key!r} in the same step; "
                            f"give {key!r} a reducer (e.g. Annotated[..., append]) or set it from one node"
                        )
                    written[key] = node
                new[key] = value if spec.reducer is replace else spec.reducer(new.get(key), value)
        return new

    def check_update(self, node: str, update: Any) -> Mapping[str, Any]:
        """Validate what a node returned; returns the update mapping."""
        if update is None:
            return {}
        if type(update) is not dict and not isinstance(update, Mapping):
            raise StateError(
                f"node {node!r} returned {type(update).__name__}; return a dict of the "
                f"{self.name} fields to update, or None"
            )
        if not update.keys() <= self.fields.keys():
            self._check_keys(update, f"node {node!r}")
        if self._has_validators:
            fields = self.fields
            for key, value in update.items():
                check = fields[key].validator
                if check is not None and (invalid := check(value)) is not None:
                    raise self._invalid(fields[key], invalid, f"node {node!r}")
        elif self._pydantic_validators:
            from pydantic import ValidationError

            checked = {}
            for key, value in update.items():
                try:
                    checked[key] = self._pydantic_validators[key].validate_python(value)
                except ValidationError as exc:
                    raise StateError(
                        f"node {node!r} set {key!r} to an invalid value: {exc}"
                    ) from None
            return checked
        return update

    # -- viewing ------------------------------------------------------------------

    def view(self, state: dict[str, Any]) -> Any:
        """The state as a node sees it: read-only mapping, dataclass or model instance."""
        if self.kind == "typeddict":
            return types.MappingProxyType(state)
        if self.kind == "dataclass":
            obj = object.__new__(self.cls)
            for name, value in state.items():
                object.__setattr__(obj, name, value)
            return obj
        return self.cls.model_construct(**state)  # type: ignore[attr-defined]

    def output(self, state: dict[str, Any]) -> Any:
        """The state as a run's result: a dict for TypedDict, else an instance."""
        if self.kind == "typeddict":
            return dict(state)
        return self.view(state)

    # -- serialisation ---------------------------------------------------------------

    def revive_update(self, update: Mapping[str, Any]) -> dict[str, Any]:
        """Turn an update read back from JSON into typed values (models, dataclasses...)."""
        out = dict(update)
        for key, value in update.items():
            spec = self.fields.get(key)
            if spec is not None and spec.reviver is not None and value is not None:
                out[key] = spec.reviver(value)
        return out

    def revive_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return self.revive_update(state)

    def check_roundtrip(self, node: str, update: Mapping[str, Any]) -> None:
        """Refuse an update the journal would give back changed: what a live run sees must
        be what every resumed run sees. Where a field's type says what a value is (a
        datetime, a set, a model), it comes back as that; anything else must be JSON."""
        from .events import decode, difference, encode, plain_json

        fields = self.fields
        back: dict[str, Any] | None = None
        for key, value in update.items():
            if plain_json(value):
                continue  # the common case: JSON as it stands comes back as it went in
            if type(value) is tuple and fields[key].reducer is append:
                value = list(value)  # append concatenates a tuple as it does a list
            if back is None:
                what = f"the update of node {node!r}"
                back = self.revive_update(decode(encode(update, what=what)))
            where = difference(value, back.get(key), f"[{key!r}]")
            if where is not None:
                raise SerializationError(
                    f"node {node!r} set {key!r} to a value the journal cannot keep as it is: "
                    f"{where}; declare the field's type in {self.name} (e.g. set[str], "
                    "tuple[int, ...], datetime) or store plain JSON values"
                )

    def _invalid(self, spec: FieldSpec, invalid: Any, where: str) -> StateError:
        """The StateError for pydantic's ValidationError ``invalid`` of field ``spec``."""
        first = invalid.errors()[0]
        at = "".join(f"[{p!r}]" for p in first.get("loc", ()))
        got = type(first.get("input")).__name__
        return StateError(
            f"{where} set {spec.name!r}{at} to a value of type {got} ({first.get('msg')}); "
            f"{self.name}.{spec.name} is declared as {_type_name(spec.annotation)}"
        )


def _state_kind(cls: Any) -> str:
    if not isinstance(cls, type):
        raise StateError(
            f"the state type must be a class (a TypedDict, a dataclass or a pydantic model), got {cls!r}"
        )
    if typing.is_typeddict(cls):
        return "typeddict"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if hasattr(cls, "model_fields") and hasattr(cls, "model_validate"):
        return "pydantic"
    raise StateError(
        f"state type {cls.__name__} is not a TypedDict, a dataclass or a pydantic model; "
        "declare it as one of those"
    )


def _read_fields(cls: Any, kind: str) -> dict[str, FieldSpec]:
    try:
        hints = get_type_hints(cls, include_extras=True)
    except Exception as exc:  # unresolved forward refs and the like
        raise StateError(f"cannot read the field types of {cls.__name__}: {exc}") from None
    defaults: dict[str, Any] = {}
    if kind == "dataclass":
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory
        hints = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    elif kind == "pydantic":
        hints = {name: hints.get(name, Any) for name in cls.model_fields}
    fields: dict[str, FieldSpec] = {}
    for name, annotation in hints.items():
        base, reducer = _split_annotated(cls.__name__, name, annotation)
        _check_reducer_fits(cls.__name__, name, base, reducer)
        fields[name] = FieldSpec(
            name=name,
            annotation=base,
            reducer=reducer,
            default=defaults.get(name, _MISSING),
            reviver=_reviver_for(base),
            validator=None if kind == "pydantic" else _validator_for(base, reducer),
        )
    if not fields:
        raise StateError(f"state type {cls.__name__} declares no fields; add at least one")
    return fields


def _split_annotated(owner: str, name: str, annotation: Any) -> tuple[Any, Reducer]:
    if get_origin(annotation) is not typing.Annotated:
        return annotation, replace
    base, *meta = get_args(annotation)
    reducers = [m for m in meta if callable(m) and not isinstance(m, type)]
    if len(reducers) > 1:
        names = ", ".join(reducer_name(r) for r in reducers)
        raise StateError(f"field {owner}.{name} has several reducers ({names}); keep exactly one")
    return base, (reducers[0] if reducers else replace)


def _check_reducer_fits(owner: str, name: str, base: Any, reducer: Reducer) -> None:
    origin = get_origin(base) or base
    if reducer is append and origin not in (list, typing.Any) and not _is_any(base):
        raise StateError(
            f"field {owner}.{name} uses the append reducer but is typed {base!r}; type it as a list"
        )
    if reducer is merge and origin not in (dict, typing.Any) and not _is_any(base):
        raise StateError(
            f"field {owner}.{name} uses the merge reducer but is typed {base!r}; type it as a dict"
        )


def _is_any(tp: Any) -> bool:
    return tp is typing.Any


def _needs_revival(tp: Any) -> bool:
    """Whether a JSON round trip changes values of this type (models, dataclasses, tuples...)."""
    if tp is typing.Any or tp in _PLAIN_SCALARS:
        return False
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _needs_revival(get_args(tp)[0])
    if origin is typing.Literal:
        return False
    if origin in (list, dict, typing.Union, types.UnionType):
        return any(_needs_revival(a) for a in get_args(tp) if a is not Ellipsis)
    if isinstance(tp, type) and issubclass(tp, enum.Enum | datetime.date | datetime.time):
        return True
    return isinstance(tp, type) or origin is not None


def _validator_for(tp: Any, reducer: Reducer) -> Callable[[Any], Any] | None:
    """A strict check of what a node may set a field to (pydantic, strict mode: no coercion,
    so the value kept is the value given). None when the type says nothing to check.

    pydantic is imported and the check built on first use, not when the graph is: a
    process that only resumes runs pays for it only if it runs a node. A type pydantic has
    no schema for (an arbitrary class) goes unchecked.
    """
    if reducer is append:  # an update adds an item, or a list of items
        args = get_args(tp)
        item = args[0] if args else Any
        if item is Any:
            return None
        tp = item | list[item] | tuple[item, ...]  # type: ignore[valid-type]
    elif reducer not in (replace, merge):
        return None  # a custom reducer decides what its updates are
    if tp is typing.Any or _is_any(tp):
        return None
    scalar = _SCALAR_CHECKS.get(tp)
    if scalar is not None:
        return scalar
    validate: Callable[..., Any] | None = None
    invalid: type[Exception] = Exception

    def check(value: Any) -> Any:
        nonlocal validate, invalid
        if validate is None:
            from pydantic import TypeAdapter, ValidationError

            try:
                validate = TypeAdapter(tp).validate_python
            except Exception:
                validate = _accept_anything
            invalid = ValidationError
        try:
            validate(value, strict=True)
        except invalid as exc:
            return exc
        return None

    return check


def _accept_anything(value: Any, *, strict: bool) -> Any:
    return value


def _scalar_check(tp: type, accepts: Callable[[Any], bool]) -> Callable[[Any], Any]:
    """The common scalar fields, checked in a few dozen nanoseconds instead of through
    pydantic (which judges what they refuse, so the error reads the same)."""

    def check(value: Any) -> Any:
        if accepts(value):
            return None
        from pydantic import TypeAdapter, ValidationError

        try:
            TypeAdapter(tp).validate_python(value, strict=True)
        except ValidationError as exc:
            return exc
        return None

    return check


# pydantic's strict mode: int refuses bool; float takes int; str takes str subclasses.
_SCALAR_CHECKS: Final[dict[Any, Callable[[Any], Any]]] = {
    str: _scalar_check(str, lambda v: isinstance(v, str)),
    int: _scalar_check(
        int, lambda v: type(v) is int or (isinstance(v, int) and not isinstance(v, bool))
    ),
    float: _scalar_check(
        float, lambda v: isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool))
    ),
    bool: _scalar_check(bool, lambda v: v is True or v is False),
}


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _reviver_for(tp: Any) -> Callable[[Any], Any] | None:
    if not _needs_revival(tp):
        return None
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(tp)
    return adapter.validate_python
