"""A router's names checked once, when it is made: aliases, fallback chains, degradations.

Everything that can be wrong with the names is refused here with the name at
fault, so that a call never discovers a typo in a fallback at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Mapping

from .messages import ModelResponse
from .spec import ModelSpec


def known(models: Mapping[str, object], aliases: Mapping[str, str]) -> str:
    """The names a user may call, for error messages."""
    text = f"models: {', '.join(sorted(models)) or '(none)'}"
    if aliases:
        text += f"; aliases: {', '.join(sorted(aliases))}"
    return text


def resolve_aliases(models: Mapping[str, ModelSpec], aliases: Mapping[str, str]) -> dict[str, str]:
    """Every alias to the model it finally names; chains followed, cycles and dangling
    aliases refused."""
    resolved: dict[str, str] = {}
    for alias in aliases:
        if alias in models:
            raise ValueError(
                f"alias {alias!r} is also the name of a model; rename the alias or the model"
            )
        path = [alias]
        target = aliases[alias]
        while target not in models:
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise ValueError(f"aliases form a cycle: {cycle}; point one of them at a model")
            if target not in aliases:
                raise ValueError(
                    f"alias {alias!r} names {target!r}, which is neither a model nor an "
                    f"alias ({known(models, aliases)})"
                )
            path.append(target)
            target = aliases[target]
        resolved[alias] = target
    return resolved


def fallback_chains(
    models: Mapping[str, ModelSpec], aliases: Mapping[str, str]
) -> dict[str, tuple[str, ...]]:
    """Each model's chain: itself, then its fallbacks depth first, each model once."""

    def name_of(owner: str, name: str) -> str:
        if name in models:
            return name
        if name in aliases:
            return aliases[name]
        raise ValueError(
            f"model {owner!r} falls back to {name!r}, which is not known "
            f"({known(models, aliases)}); add it to models= or fix the name"
        )

    direct = {
        owner: [name_of(owner, name) for name in spec.fallbacks] for owner, spec in models.items()
    }

    def chain(first: str) -> tuple[str, ...]:
        order: list[str] = []
        stack = [first]
        while stack:
            name = stack.pop()
            if name in order:
                continue
            order.append(name)
            stack.extend(reversed(direct[name]))
        return tuple(order)

    return {name: chain(name) for name in models}


def degradations(
    degrade: Mapping[str, str | ModelResponse] | None,
    models: Mapping[str, ModelSpec],
    aliases: Mapping[str, str],
) -> dict[str, str | ModelResponse]:
    """``degrade`` keyed and valued by model names, aliases resolved, unknown ones refused."""
    out: dict[str, str | ModelResponse] = {}
    for key, target in (degrade or {}).items():
        name = models_name(key, models, aliases, what="degrade= key")
        if isinstance(target, ModelResponse):
            out[name] = target
        elif isinstance(target, str):
            out[name] = models_name(target, models, aliases, what=f"degrade[{key!r}]")
        else:
            raise TypeError(
                f"degrade[{key!r}] is {type(target).__name__}; give a model name or a "
                "ModelResponse (a canned answer)"
            )
    return out


def models_name(
    name: str, models: Mapping[str, ModelSpec], aliases: Mapping[str, str], *, what: str
) -> str:
    if name in models:
        return name
    if name in aliases:
        return aliases[name]
    raise ValueError(f"{what} {name!r} is not a known model ({known(models, aliases)})")
