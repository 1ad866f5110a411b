"""Every store keeps the same audit chain: the same events give the same hashes on the
memory, SQLite and PostgreSQL stores; each verifies, exports and purges alike."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mainspring import Runtime
from mainspring.events import Event, Finished, StepFinished, StepStarted
from mainspring.guard import audit
from mainspring.store import Store, store_from_url
from mainspring.store.records import Durability, RunRecord, RunStatus

from ._audit_fixtures import fill
from .conftest import postgres_schema_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def url(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        async with postgres_schema_url() as pg:
            yield pg


async def _journal(store: Store) -> list[bytes | None]:
    now = 1_800_000_000.25
    record = RunRecord("same", "g", None, RunStatus.RUNNING, now, now)
    events = [Event.of("same", 1, now, StepStarted(0, 0, "a"))]
    await store.create_run(record, events, Durability.SYNC)
    more = [
        Event.of("same", 2, now + 1, StepFinished(0, 0, "a", {"k": "é ✓"})),
        Event.of("same", 3, now + 2, Finished()),
    ]
    await store.append("same", 1, more, status=RunStatus.FINISHED)
    return [r.hash for r in await audit.audited(store).audit_chain("same")]


async def test_the_same_events_give_the_same_hashes_everywhere(tmp_path: Path) -> None:
    hashes = []
    for url in ("memory://", f"sqlite:///{tmp_path / 'x.db'}"):
        store = store_from_url(url)
        await store.open()
        try:
            hashes.append(await _journal(store))
        finally:
            await store.aclose()
    async with postgres_schema_url() as pg:
        store = store_from_url(pg)
        await store.open()
        try:
            hashes.append(await _journal(store))
        finally:
            await store.aclose()
    assert len(hashes[0]) == 3 and all(h is not None for h in hashes[0])
    assert hashes[0] == hashes[1] == hashes[2]


async def test_verify_export_and_purge_alike(url: str) -> None:
    async with Runtime.open(url) as rt:
        old = await fill(rt, 2, tenant="t1")
        kept = await fill(rt, 1, tenant="t2")
        report = await audit.verify(rt)
        assert report.ok, report.findings
        assert report.anchors == 6
        lines = [r async for r in audit.records(rt)]
        events = [r for r in lines if r["type"] == "event"]
        assert len(events) == report.events
        gone = await audit.purge(rt, {"t1": 0}, now=time.time() + 1)
        assert sorted(gone) == sorted(old)
        after = await audit.verify(rt)
        assert after.ok, after.findings
        assert after.runs == len(kept) and len(after.notes) == 2
