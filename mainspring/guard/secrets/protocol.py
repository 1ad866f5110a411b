"""The one seam every secret source sits behind: ``get(name) -> value or None``.

A provider answers from memory or a local read (an environment variable, a mounted
file), because a tool call asks it on the event loop: a remote manager (Vault, a cloud
secret manager) fits through :class:`~.cached.CachedSecrets`, which keeps what it
fetched for a short time. Every provider is also a function of a name, so it can be
given wherever a ``secrets=`` takes a function (``Toolbox(secrets=...)``, a model
provider's ``secrets=``). The conformance suite (tests/test_secrets_providers.py) runs
against each provider here.
"""

from __future__ import annotations

import re
from typing import Final, Protocol, runtime_checkable

from ...errors import MainspringError

NAME: Final = re.compile(r"[A-Za-z0-9_.\-/]{1,256}")


class SecretsError(MainspringError):
    """A secret source that cannot answer (a malformed file, a manager that is down and
    has nothing cached). The message names the source and the secret, never a value."""


@runtime_checkable
class SecretProvider(Protocol):
    """Where secrets come from. ``get`` returns the current value (a rotated secret's new
    value as soon as the source has it), or None when the source does not hold ``name``;
    it raises ``ValueError`` for a name no source could hold and ``SecretsError`` when the
    source itself fails. It must be safe to call from several threads."""

    def get(self, name: str) -> str | None: ...

    def __call__(self, name: str) -> str | None: ...


def check_name(name: str) -> str:
    """``name`` if it can name a secret, else a ValueError saying what a name may hold."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"secret name {name!r}: use 1-256 letters, digits, '_', '.', '-' or '/'")
    return name
