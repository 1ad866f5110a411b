"""Leases have teeth, with real processes: one frozen by SIGSTOP past its lease, one whose
wall clock runs 100 s ahead (issue 9, items 5, 7 and 14).

The processes are ``tests/lease_worker.py``; every effect they execute is a row in a
ledger file, so the test can tell which process executed what, and when.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mainspring import EventKind, Runtime
from tests.conftest import postgres_schema_url
from tests.lease_worker import ledger_schema

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'leases.db'}"
    else:
        async with postgres_schema_url() as url:
            yield url


@contextmanager
def _worker(store: str, ledger: Path, role: str, *options: str) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "tests.lease_worker", "--store", store]
    proc = subprocess.Popen(
        [*command, "--ledger", str(ledger), "--role", role, *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()


def _executions(ledger: Path) -> list[tuple[str, int, int, float]]:
    conn = sqlite3.connect(ledger, timeout=30)
    try:
        return list(conn.execute("SELECT key, effect, pid, ts FROM executions ORDER BY ts"))
    finally:
        conn.close()


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _lines(proc: subprocess.Popen[str], timeout: float) -> list[str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out, err[-3000:])
    return out.splitlines()


async def test_a_process_frozen_past_its_lease_never_acts_again(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    ledger_schema(str(ledger))
    options = ("--effects", "6", "--pause", "0.25", "--lease-ttl", "1.0")
    with _worker(store_url, ledger, "drive", *options) as frozen:
        _wait_for(lambda: len(_executions(ledger)) >= 2, 30, "two effects of the driver")
        os.kill(frozen.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        executed_by_frozen = {key for key, _, pid, _ in _executions(ledger) if pid == frozen.pid}
        time.sleep(1.3)  # past its lease
        with _worker(store_url, ledger, "take", *options) as taker:
            taken = _lines(taker, 60)
        os.kill(frozen.pid, signal.SIGCONT)
        woke_at = time.monotonic()
        woken = _lines(frozen, 60)

    final = {"effects": 6, "pause": 0.25, "done": [0, 1, 2, 3, 4, 5]}
    assert f"RESULT lease-0 {json.dumps(final)}" in taken
    # The process that lost the race waits for the run's outcome from the journal.
    assert f"RESULT lease-0 {json.dumps(final)}" in woken, woken
    executions = _executions(ledger)
    late = [e for e in executions if e[2] == frozen.pid and e[3] >= stopped_at]
    assert late == [], f"the frozen process acted after waking at {woke_at}: {late}"
    by_key: dict[str, list[int]] = {}
    for key, _, pid, _ in executions:
        by_key.setdefault(key, []).append(pid)
    assert len(by_key) == 6
    for key, pids in by_key.items():
        # Twice only for the effect the freeze caught between its call and its record:
        # then the taker runs it again with the same key, as any unfinished effect.
        assert len(pids) == 1 or (len(pids) == 2 and key in executed_by_frozen), by_key
    async with Runtime.open(store_url, recover="off") as rt:
        events = await rt.events("lease-0")
        record = await rt.get_run("lease-0")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events].count(EventKind.FINISHED) == 1
    assert record.owner is None


async def test_a_process_whose_clock_runs_ahead_takes_no_healthy_run(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    ledger_schema(str(ledger))
    options = ("--runs", "4", "--effects", "12", "--pause", "0.25", "--lease-ttl", "0.6")
    with _worker(store_url, ledger, "drive", *options) as healthy:
        _wait_for(lambda: len(_executions(ledger)) >= 4, 30, "the healthy process's effects")
        ahead = ("--clock-offset", "100", "--for-seconds", "2.5")
        with _worker(store_url, ledger, "take", *options, *ahead) as skewed:
            taken = _lines(skewed, 60)
        done = _lines(healthy, 60)
    assert "DONE adopted=0" in taken
    assert sum(line.startswith("RESULT") for line in done) == 4
    assert {pid for _, _, pid, _ in _executions(ledger)} == {healthy.pid}
    keys = [key for key, _, _, _ in _executions(ledger)]
    assert len(keys) == len(set(keys)) == 4 * 12
