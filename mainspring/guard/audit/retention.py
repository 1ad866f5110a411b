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


class Deleted(list[str]):
    """The run ids deleted (a list), and in ``skipped`` those chosen but left in place:
    resumed (or, for a purge, changed) between the listing and the deletion's lock."""

    skipped: list[str]

    def __init__(self, deleted: list[str], skipped: list[str]) -> None:
        super().__init__(deleted)
        self.skipped = skipped


class Erased(list[Anchor]):
    """The anchors of the runs erased (a list), and in ``skipped`` the run ids chosen but
    left in place: resumed between the listing and the deletion's lock."""

    skipped: list[str]

    def __init__(self, anchors: list[Anchor], skipped: list[str]) -> None:
        super().__init__(anchors)
        self.skipped = skipped


async def purge(
    store: object,
    retention: Mapping[str, float],
    *,
    default: float | None = None,
    actor: str | None = None,
    now: float | None = None,
    dry_run: bool = False,
) -> Deleted:
    """Delete the runs at rest whose last change is older than their tenant's retention.

    ``retention`` maps a tenant (the run's tenant: its metadata ``"tenant"``, ``""`` for
    the default tenant) to an age in days; runs of other tenants use ``default`` (None:
    kept). Returns the run ids deleted (with ``dry_run``, those that would be); a run
    resumed meanwhile is left alone and listed in the result's ``skipped``.
    """
    s = audited(store)
    for name, age in {**retention, "(default)": default or 0.0}.items():
        if age < 0:
            raise MainspringError(f"retention for {name!r} is {age} days; give 0 or more")
    at = time.time() if now is None else now
    chosen: list[str] = []
    details: list[str] = []
    cutoffs: list[float | None] = []
    for run in await s.audit_runs():
        if run.status == "running":
            continue
        days = retention.get(run.tenant, default)
        if days is not None and run.updated_at < at - days * _DAY:
            cutoff = at - days * _DAY
            chosen.append(run.run_id)
            cutoffs.append(cutoff)
            details.append(_json({"tenant": run.tenant, "retention_days": days, "cutoff": cutoff}))
    if dry_run or not chosen:
        return Deleted(chosen, [])
    anchors = await s.delete_runs(chosen, PURGED, actor or s.audit.actor, details, cutoffs)
    gone = [a.run_id for a in anchors]
    done = set(gone)
    return Deleted(gone, [r for r in chosen if r not in done])


async def erase_user(
    store: object, user: str, *, actor: str | None = None, tenant: str | None = None
) -> Erased:
    """Delete every run at rest whose metadata ``"user"`` is ``user`` (within ``tenant``,
    if given: ``""`` is the default tenant). Its anchors keep the SHA-256 of the user id,
    never the id. A run resumed meanwhile is left alone and listed in ``skipped``."""
    s = audited(store)
    digest = hashlib.sha256(user.encode()).hexdigest()
    chosen = [
        r.run_id
        for r in await s.audit_runs()
        if r.metadata.get("user") == user
        and r.status != "running"
        and (tenant is None or r.tenant == tenant)
    ]
    if not chosen:
        return Erased([], [])
    detail = _json({"user_sha256": digest})
    anchors = await s.delete_runs(chosen, ERASED, actor or s.audit.actor, [detail] * len(chosen))
    gone = {a.run_id for a in anchors}
    return Erased(anchors, [r for r in chosen if r not in gone])
