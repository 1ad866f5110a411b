"""W13-tenants: what scoping a store query by tenant costs, against the same query unscoped.

A store holding ``runs`` runs spread over 20 tenants (threads of 10 runs each), on SQLite
and on PostgreSQL, sampled in interleaved rounds:

* ``get``: ``get_run(id, tenant=...)`` (what every call of a tenant's view starts with)
  against ``get_run(id)``;
* ``list``: one tenant's newest 50 runs (``RunQuery(tenant=..., limit=50)``, index
  ``runs_tenant``) against the store's newest 50;
* ``threads``: one tenant's threads against every tenant's (both ``limit=50``).

Each line reports the scoped query against the unscoped one (ratio > 1: scoping is the
cheaper). ``get`` is the same primary-key read with one more comparison: it may cost at
most 15% more (noise on a shared machine). ``list`` reads rows one in 20 apart instead of
side by side, so it is expected to cost more per row on SQLite; ``threads`` windows over
one tenant's runs instead of all, so it is expected to cost less.
"""

from __future__ import annotations

import os
from typing import Any

from mainspring.store import Durability, RunQuery, RunRecord, RunStatus, Store, store_from_url
from mainspring.store.records import CreateResult

from harness import US, Result, Settings, async_sampler, at_most, interleave, skipped
from workloads.postgres import reset_schemas, unavailable

TENANTS = 20


def _record(i: int) -> RunRecord:
    tenant = f"tenant-{i % TENANTS:02d}"
    return RunRecord(
        run_id=f"run-{i:07d}",
        graph="g",
        thread=f"thread-{i // (TENANTS * 10)}",
        status=RunStatus.FINISHED,
        created_at=1e9 + i,
        updated_at=1e9 + i,
        metadata={"tenant": tenant, "user": f"user-{i % 7}"},
    )


async def _seed(store: Store, runs: int) -> None:
    pending: list[Any] = []
    for i in range(runs):
        pending.append(store.create_run(_record(i), [], Durability.OFF))
        if len(pending) == 200:
            for made in pending:
                result: CreateResult = await made
                assert result.created
            pending = []
    for made in pending:
        await made
    await store.flush()


async def _measure(store: Store, label: str, runs: int, settings: Settings) -> list[Result]:
    calls = settings.pick(200, 1000)
    middle = _record(runs // 2)
    target, tenant = middle.run_id, middle.tenant
    scoped_query, all_query = RunQuery(tenant=tenant, limit=50), RunQuery(limit=50)
    samples = await interleave(
        {
            "get_scoped": async_sampler(lambda: store.get_run(target, tenant=tenant), calls),
            "get_all": async_sampler(lambda: store.get_run(target), calls),
            "list_scoped": async_sampler(lambda: store.list_runs(scoped_query), calls // 10),
            "list_all": async_sampler(lambda: store.list_runs(all_query), calls // 10),
            "threads_scoped": async_sampler(
                lambda: store.list_threads(limit=50, tenant=tenant), calls // 20
            ),
            "threads_all": async_sampler(lambda: store.list_threads(limit=50), calls // 20),
        },
        reps=settings.pick(5, 15),
        warmup=1,
    )
    results = []
    for what in ("get", "list", "threads"):
        scoped, everyone = samples[f"{what}_scoped"], samples[f"{what}_all"]
        result = Result(
            f"W13-tenants-{what}-{label}",
            scoped.best * US,
            everyone.best * US,
            "us/call",
            extra={"runs": runs, "tenants": TENANTS},
        )
        if what == "get":
            result.checks = [at_most(scoped.best / everyone.best, 1.15, "scoped <= 1.15x unscoped")]
        results.append(result)
    return results


async def run(settings: Settings) -> list[Result]:
    runs = settings.pick(1000, 10_000)
    results: list[Result] = []
    sqlite = store_from_url(f"sqlite:///{settings.workdir / 'w13-tenants.db'}")
    await sqlite.open()
    try:
        await _seed(sqlite, runs)
        results += await _measure(sqlite, "sqlite", runs, settings)
    finally:
        await sqlite.aclose()
    missing = await unavailable(settings.pg_url)
    if missing is not None:
        return [*results, skipped("W13-tenants-postgres", "us/call", missing)]
    schema = f"w13_tenants_{os.getpid()}"
    await reset_schemas(settings.pg_url, schema, create=False)
    sep = "&" if "?" in settings.pg_url else "?"
    pg = store_from_url(f"{settings.pg_url}{sep}schema={schema}")
    await pg.open()
    try:
        await _seed(pg, runs)
        results += await _measure(pg, "postgres", runs, settings)
    finally:
        await pg.aclose()
        await reset_schemas(settings.pg_url, schema, create=False)
    return results
