"""Several sources in order: the first that holds a secret answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .protocol import check_name

Source = Callable[[str], "str | None"] | Mapping[str, str]


class ChainSecrets:
    """``ChainSecrets(FileSecrets("/run/secrets"), EnvSecrets())``: each name is looked up
    in the providers in order (a mapping or a function of a name also serve) and the
    first value wins; a source that fails raises (a chain never hides an outage by
    falling through to an older value elsewhere)."""

    def __init__(self, *providers: Source) -> None:
        if not providers:
            raise ValueError("ChainSecrets() needs at least one provider")
        for p in providers:
            if not (isinstance(p, Mapping) or callable(p)):
                raise TypeError(
                    f"ChainSecrets: {p!r} is neither a provider, a function of a name nor a mapping"
                )
        self.providers = providers

    def __repr__(self) -> str:
        names = ", ".join(type(p).__name__ for p in self.providers)
        return f"ChainSecrets({names})"

    def get(self, name: str) -> str | None:
        check_name(name)
        for provider in self.providers:
            value = provider.get(name) if isinstance(provider, Mapping) else provider(name)
            if value:
                return value
        return None

    __call__ = get
