"""``EngineServices.committed``: told of each batch a run's store has, in order, and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from mainspring import Runtime
from mainspring.events import Event
from mainspring.status import RunStatus
from tests.stream_graphs import asker, gateway, ticker

pytestmark = pytest.mark.anyio


class Heard:
    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = {}
        self.statuses: dict[str, list[RunStatus]] = {}

    def __call__(self, run_id: str, events: Sequence[Event], status: RunStatus | None) -> None:
        self.events.setdefault(run_id, []).extend(events)
        if status is not None:
            self.statuses.setdefault(run_id, []).append(status)


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_listeners_hear_the_journal_as_committed(url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if url == "sqlite" else url
    heard = Heard()
    async with Runtime.open(url, models=gateway(0.0)) as rt:
        rt.services.committed.append(heard)
        run = await rt.start(ticker, {"limit": 5})
        await run.wait()
        parked = await rt.start(asker, {"question": "?"})
        await parked.wait()
        await rt.resume(parked.run_id, True)
        await rt.handle(parked.run_id).wait()
        for run_id in (run.run_id, parked.run_id):
            journal = await rt.events(run_id)
            assert [(e.seq, e.kind) for e in heard.events[run_id]] == [
                (e.seq, e.kind) for e in journal
            ]  # each once, in order, run_started too
        assert heard.statuses[run.run_id][-1] is RunStatus.FINISHED
        assert RunStatus.INTERRUPTED in heard.statuses[parked.run_id]
        assert heard.statuses[parked.run_id][-1] is RunStatus.FINISHED
        # A replay writes to a scratch store: nothing of it is heard.
        before = sum(len(v) for v in heard.events.values())
        await rt.replay(run.run_id)
        assert sum(len(v) for v in heard.events.values()) == before
