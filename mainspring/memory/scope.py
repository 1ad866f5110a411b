"""Who a memory belongs to: a tenant always, a user and an agent where given."""

from __future__ import annotations

import msgspec


class Scope(msgspec.Struct, frozen=True):
    """The namespace of a memory item or a query.

    ``tenant`` always matches exactly (the default tenant is ``""``). On an item,
    ``user``/``agent`` of None mean "not tied to one"; in a query, a given ``user`` or
    ``agent`` matches exactly and None means "any".
    """

    tenant: str = ""
    user: str | None = None
    agent: str | None = None

    def matches(self, item: Scope) -> bool:
        """Whether an item of scope ``item`` is visible to a query of this scope."""
        return (
            item.tenant == self.tenant
            and (self.user is None or item.user == self.user)
            and (self.agent is None or item.agent == self.agent)
        )
