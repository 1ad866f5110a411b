"""Secrets from environment variables, read again on every lookup."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .protocol import check_name


class EnvSecrets:
    """Secret ``NAME`` is the environment variable ``prefix + names.get(NAME, NAME)``.

    ``EnvSecrets()`` reads ``NAME`` itself; ``EnvSecrets(prefix="APP_")`` reads
    ``APP_NAME``; ``EnvSecrets({"PAYMENTS_TOKEN": "STRIPE_KEY"}, only=True)`` reads only
    the names it maps. The variable is read on every lookup, so a value set in this
    process (``os.environ[...] = ...``) is seen by the next call; an empty variable is
    no secret (None). ``environ`` replaces ``os.environ`` (a test, a subprocess's env).
    """

    def __init__(
        self,
        names: Mapping[str, str] | None = None,
        *,
        prefix: str = "",
        only: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.names = dict(names or {})
        for name, variable in self.names.items():
            check_name(name)
            if not variable or "=" in variable:
                raise ValueError(f"EnvSecrets: {name!r} maps to {variable!r}, not a variable name")
        self.prefix = prefix
        self.only = only
        self._environ = environ

    def __repr__(self) -> str:
        return f"EnvSecrets(prefix={self.prefix!r}, names={sorted(self.names)})"

    def variable(self, name: str) -> str | None:
        """The environment variable that holds ``name`` (None: this provider never has it)."""
        mapped = self.names.get(check_name(name))
        if mapped is None and self.only:
            return None
        return self.prefix + (mapped or name)

    def get(self, name: str) -> str | None:
        variable = self.variable(name)
        if variable is None:
            return None
        environ = os.environ if self._environ is None else self._environ
        return environ.get(variable) or None

    __call__ = get
