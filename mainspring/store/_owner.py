"""Renamed to ``_lease_owners``; kept for ``mainspring.engine.runtime``'s import until it moves."""

from ._lease_owners import new_owner_id, owner_is_dead

__all__ = ["new_owner_id", "owner_is_dead"]
