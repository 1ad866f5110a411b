"""The API key store protocol: keys are made, checked and revoked here; only hashes are kept.

A key reads ``ms_<key_id>_<secret>``: the id finds the row, the secret (32 random bytes)
is compared by its SHA-256 (a key has the entropy a slow hash would protect; a password
has not). A key belongs to one tenant (``"*"``: every tenant, an operator's key) and has
scopes: ``read``, ``run``, ``approve``, ``admin`` (admin implies the others).
"""

from __future__ import annotations

import enum
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

    async def revoke(self, key_id: str) -> bool: ...

    async def list(self, tenant: str | None = None) -> list[KeyInfo]: ...
