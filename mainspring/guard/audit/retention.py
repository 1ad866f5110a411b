"""Retention and the right to erasure: whole runs deleted, each after an anchor that keeps
its last seq and head, who deleted it, when and why, so ``verify`` still passes and tells
a purge from a deletion.

Runs belong to a tenant and a user through their metadata (``{"tenant": ..., "user":
...}``). Only runs at rest are deleted: a running run is still being written. Erasure
keeps no user id in the store: its anchors hold the SHA-256 of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

import msgspec

from ...errors import MainspringError
from ...store._chain import ERASED, PURGED, Anchor
from .verify import audited

_DAY = 86_400.0


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


async def purge(
    store: object,
    retention: Mapping[str, float],
    *,
    default: float | None = None,
    actor: str | None = None,
    now: float | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete the runs at rest whose last change is older than their tenant's retention.

    ``retention`` maps a tenant (run metadata ``"tenant"``) to an age in days; runs of
    other tenants (or none) use ``default`` (None: kept). Returns the run ids deleted
    (with ``dry_run``, those that would be).
    """
    s = audited(store)
    for name, age in {**retention, "(default)": default or 0.0}.items():
        if age < 0:
            raise MainspringError(f"retention for {name!r} is {age} days; give 0 or more")
    at = time.time() if now is None else now
    chosen: list[str] = []
    details: list[str] = []
    for run in await s.audit_runs():
        if run.status == "running":
            continue
        tenant = run.metadata.get("tenant")
        days: float | None = default
        if isinstance(tenant, str) and tenant in retention:
            days = retention[tenant]
        if days is not None and run.updated_at < at - days * _DAY:
            chosen.append(run.run_id)
            details.append(
                _json({"tenant": tenant, "retention_days": days, "cutoff": at - days * _DAY})
            )
    if dry_run or not chosen:
        return chosen
    anchors = await s.delete_runs(chosen, PURGED, actor or s.audit.actor, details)
    return [a.run_id for a in anchors]


async def erase_user(
    store: object, user: str, *, actor: str | None = None, tenant: str | None = None
) -> list[Anchor]:
    """Delete every run at rest whose metadata ``"user"`` is ``user`` (within ``tenant``,
    if given). Its anchors keep the SHA-256 of the user id, never the id."""
    s = audited(store)
    digest = hashlib.sha256(user.encode()).hexdigest()
    chosen = [
        r.run_id
        for r in await s.audit_runs()
        if r.metadata.get("user") == user
        and r.status != "running"
        and (tenant is None or r.metadata.get("tenant") == tenant)
    ]
    if not chosen:
        return []
    detail = _json({"user_sha256": digest})
    return await s.delete_runs(chosen, ERASED, actor or s.audit.actor, [detail] * len(chosen))
