"""The API key store protocol: keys are made, checked and revoked here; only hashes are kept.

A key reads ``ms_<key_id>_<secret>``: the id finds the row, the secret (32 random bytes)
is compared by its SHA-256 (a key has the entropy a slow hash would protect; a password
has not). A key belongs to one tenant (``"*"``: every tenant, an operator's key) and has
scopes: ``read``, ``run``, ``approve``, ``admin`` (admin implies the others).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class Scope(enum.StrEnum):
    READ = "read"
    RUN = "run"
    APPROVE = "approve"
    ADMIN = "admin"


#: The tenant of an operator's key: it acts on every tenant's runs.
ALL_TENANTS = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the key's id, its tenant and its scopes."""

    key_id: str
    tenant: str  # ALL_TENANTS for an operator's key
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: never its secret."""

    key_id: str
    tenant: str
    scopes: frozenset[Scope]
    name: str
    created_at: float
    revoked_at: float | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.key_id, self.tenant, self.scopes)


class KeyStore(Protocol):
    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create(
        self, tenant: str, scopes: frozenset[Scope], name: str = ""
    ) -> tuple[KeyInfo, str]:
        """A new key: its info and the whole key (shown once, never stored)."""
        ...

    async def verify(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None otherwise."""
        ...

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such key or it was revoked already."""
        ...

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        """The keys (of ``tenant`` if given), revoked ones too, oldest first."""
        ...


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[Scope]:
    """Scopes from ``"read,run"`` (or names); a ValueError naming the valid ones."""
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    found: set[Scope] = set()
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        try:
            found.add(Scope(name))
        except ValueError:
            valid = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {raw.strip()!r}; the scopes are {valid}") from None
    if not found:
        raise ValueError("a key needs at least one scope: read, run, approve or admin")
    return frozenset(found)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it can name a key's tenant: printable, at most 200 characters."""
    if len(tenant) > 200 or not tenant.isprintable():
        raise ValueError(
            f"tenant {tenant[:40]!r} is not a tenant name: use printable characters, at most "
            '200 ("*" for an operator\'s key of every tenant, "" for the default tenant)'
        )
    return tenant
