"""Crash safety, proven: SIGKILL a worker at random moments, restart it, audit everything.

A worker process (``tests/crash_worker.py``) runs a few hundred durable runs
whose effects go to an external ledger that honours idempotency keys. The test
kills it with SIGKILL several times at random moments, restarts it (recovery
on open takes over the dead process's runs at once), lets the last incarnation
finish, and then proves from the journals and the ledger that:

* every run exists, finished, has a gap-free journal and the exact final state;
* every effect the model expects was applied exactly once, nothing else was;
* each effect has exactly one recorded result in its journal, equal to the
  ledger's, and it is the *last* execution of that key: no effect was executed
  again once its ``effect_finished`` was committed;
* a key ran more than once only across kills (one execution per incarnation at
  most), and such re-executions did happen: the same-key re-run path was hit.

The interrupt variant parks half the runs on ``ctx.interrupt``, kills workers
while runs are parked and others are mid-flight, then resumes every parked run
from new processes, killed again mid-resume; effects made before the interrupt
must never run again after it.

The seed is printed and in every failure message; replay one with
``MAINSPRING_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import functools
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, Context, EventKind, Graph, RunStatus, Runtime, store_from_url
from mainspring.engine.fold import RunFold
from tests import crash_worker as worker
from tests.conftest import PG_URL, drop_postgres_schema, require_postgres

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
FINISH_TIMEOUT = 180.0

# A run resumed by a process that dies before the next step boundary must stay recoverable
# (test_resume_then_crash_leaves_run_recoverable). The resume worker would report a run left
# 'interrupted' with nothing pending as STRANDED; the crash tests assert that none occur.
STRANDED_RUNS_BUG = False


# -- driving the worker ----------------------------------------------------------------------------


class WorkerProcess:
    """One incarnation of the worker; its stdout is read by a thread, line by line."""

    def __init__(self, cmd: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(
        self, prefix: str, timeout: float, accept: Callable[[str], bool] = lambda line: True
    ) -> str | None:
        """The next line starting with ``prefix`` that ``accept``s, or None (exited, or timed out)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if line.startswith(prefix) and accept(line):
                return line

    def drain(self) -> None:
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.drain()
        self._stderr.close()

    def finish(self, timeout: float) -> int | None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.drain()
        self._stderr.close()
        return rc

    def tail(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-4000:]
        return "stdout tail:\n  " + "\n  ".join(self.lines[-15:]) + f"\nstderr tail:\n{err}"


@dataclass
class Campaign:
    """Runs worker incarnations against one store and ledger, killing some of them."""

    store_url: str
    ledger: Path
    runs: int
    durability: str
    seed: int
    workdir: Path
    approvals: bool = False
    generation: int = 0
    kills: int = 0
    kill_log: list[str] = field(default_factory=list)
    early_exits: int = 0
    stranded: list[str] = field(default_factory=list)  # see STRANDED_RUNS_BUG
    kills_while_parked: int = 0  # kills that landed while some runs were parked on an interrupt
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def where(self) -> str:
        return f"[seed {self.seed}, generation {self.generation}, kills so far {self.kills}]"

    def launch(self, mode: str) -> WorkerProcess:
        self.generation += 1
        cmd = [
            sys.executable, "-m", "tests.crash_worker",
            "--store", self.store_url, "--runs", str(self.runs), "--ledger", str(self.ledger),
            "--generation", str(self.generation), "--mode", mode, "--durability", self.durability,
            "--seed", str(self.seed), "--latency", "0.02",
        ]  # fmt: skip
        if self.approvals:
            cmd.append("--approvals")
        return WorkerProcess(cmd, self.workdir / f"worker-{self.generation}.stderr")

    def _collect(self, proc: WorkerProcess) -> None:
        self.stranded += [line.split()[1] for line in proc.lines if line.startswith("STRANDED")]

    def kill_at_random(
        self,
        mode: str,
        times: int,
        *,
        span: tuple[int, int] | None = None,
        latest: float = 1.5,
        once_parked: int = 0,
    ) -> None:
        """Start ``times`` incarnations and SIGKILL each at a random moment.

        The moment is a random 0.05-``latest`` s after the worker is ready, or sooner:
        when the number of stopped runs passes a random point of the ``times``-th part
        of ``span`` (stopped runs at the start and end of this phase) that is this
        kill's, so that kills land mid-work however fast the machine. With
        ``once_parked``, the first kill also waits until that many runs have parked
        on their interrupt (others are still mid-flight then).
        """
        lo, hi = span or (0, self.runs)
        for attempt in range(times):
            proc = self.launch(mode)
            if proc.wait_for("READY", READY_TIMEOUT) is None:
                proc.kill()
                pytest.fail(f"worker never became ready {self.where()}\n{proc.tail()}")
            ready = time.monotonic()
            if attempt == 0 and once_parked:
                parked = proc.wait_for(
                    "PROGRESS", READY_TIMEOUT, lambda line: _parked(line) >= once_parked
                )
                if parked is None:
                    proc.kill()
                    pytest.fail(f"{once_parked} runs never parked {self.where()}\n{proc.tail()}")
            delay = self.rng.uniform(0.05, 0.3 if attempt == 0 and once_parked else latest)
            part = self.rng.uniform(attempt, attempt + 1) / times
            cap = lo + (hi - lo) * 0.9 * part
            proc.wait_for("PROGRESS", delay, functools.partial(_past, cap))
            if proc.proc.poll() is not None:  # it finished everything before the kill
                rc = proc.finish(10)
                self._collect(proc)
                assert rc == 0, (
                    f"worker exited with {rc} before its kill {self.where()}\n{proc.tail()}"
                )
                self.early_exits += 1
                return
            proc.kill()
            self._collect(proc)
            self.kills += 1
            progress = [line for line in proc.lines if line.startswith("PROGRESS")]
            if progress and _parked(progress[-1]) > 0:
                self.kills_while_parked += 1
            self.kill_log.append(
                f"gen {self.generation} ({mode}) killed {time.monotonic() - ready:.2f}s after "
                f"ready at {progress[-1] if progress else 'PROGRESS 0/?'}"
            )

    def finish(self, mode: str) -> str:
        """Let one incarnation run to the end; return its DONE line."""
        proc = self.launch(mode)
        rc = proc.finish(FINISH_TIMEOUT)
        self._collect(proc)
        done = next((line for line in proc.lines if line.startswith("DONE")), None)
        assert rc == 0 and done is not None, (
            f"final worker ({mode}) did not finish cleanly (exit {rc}) {self.where()}; "
            f"kills: {self.kill_log}\n{proc.tail()}"
        )
        return done


def _parked(progress: str) -> int:
    """``<n>`` of a line ``PROGRESS <stopped>/<runs> parked=<n>``."""
    return int(progress.rpartition("parked=")[2] or 0)


def _stopped(progress: str) -> int:
    """``<stopped>`` of a line ``PROGRESS <stopped>/<runs> parked=<n>``."""
    return int(progress.split()[1].partition("/")[0])


def _past(cap: float, progress: str) -> bool:
    return _stopped(progress) >= cap


# -- reading what happened -------------------------------------------------------------------------


@dataclass
class RunView:
    run_id: str
    status: RunStatus
    last_seq: int
    seqs: list[int]
    kinds: list[EventKind]
    state: dict[str, Any]
    pending: int
    recorded: dict[str, list[dict[str, Any]]]  # key -> results of its effect_finished events
    failed_keys: dict[str, int]  # key -> effect_finished events carrying an error


async def _read_runs(url: str, runs: int) -> dict[str, RunView]:
    """Every run's record and journal, read from the store itself; the state is the journal's fold."""
    views: dict[str, RunView] = {}
    store = store_from_url(url)
    await store.open()
    try:
        for n in range(runs):
            run_id = worker.run_id_of(n)
            record = await store.get_run(run_id)
            if record is None:
                continue
            events = await store.read(run_id)
            fold = RunFold(worker.app.schema, revive=True)
            for event in events:
                fold.apply(event)
            keys: dict[tuple[int, int, int], str] = {}
            recorded: dict[str, list[dict[str, Any]]] = defaultdict(list)
            failed: dict[str, int] = defaultdict(int)
            for e in events:
                where = (e.data.get("step", -1), e.data.get("task", -1), e.data.get("effect", -1))
                if e.kind is EventKind.EFFECT_STARTED:
                    keys[where] = e.data["key"]
                elif e.kind is EventKind.EFFECT_FINISHED:
                    key = keys[where]
                    if "error" in e.data:
                        failed[key] += 1
                    else:
                        recorded[key].append(e.data["result"])
            views[run_id] = RunView(
                run_id, record.status, record.last_seq, [e.seq for e in events],
                [e.kind for e in events], dict(worker.app.schema.output(fold.state)),
                len(fold.pending_interrupts), dict(recorded), dict(failed),
            )  # fmt: skip
    finally:
        await store.aclose()
    return views


@dataclass
class Ledger:
    applied: dict[str, tuple[str, str, int, int]]  # key -> (run_id, effect, value, attempt_id)
    attempts: dict[str, list[tuple[int, int, str]]]  # key -> [(attempt_id, generation, phase)]


def _read_ledger(path: Path) -> Ledger:
    conn = sqlite3.connect(path)
    try:
        applied = {
            key: (run_id, effect, value, attempt_id)
            for key, run_id, effect, value, attempt_id in conn.execute(
                "SELECT key, run_id, effect, value, attempt_id FROM applied"
            )
        }
        attempts: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        for attempt_id, key, gen, phase in conn.execute(
            "SELECT id, key, gen, phase FROM attempts ORDER BY id"
        ):
            attempts[key].append((attempt_id, gen, phase))
    finally:
        conn.close()
    return Ledger(applied, dict(attempts))


# -- the proof -------------------------------------------------------------------------------------


@dataclass
class Audit:
    runs: int
    effects: int
    reexecuted: list[str]  # keys executed more than once (each such extra execution once)
    extra_executions: int
    failed_effects: int


def audit(campaign: Campaign) -> Audit:
    """Check every claim of the module docstring; returns the figures for the report."""
    where = campaign.where()
    views = anyio.run(_read_runs, campaign.store_url, campaign.runs)
    ledger = _read_ledger(campaign.ledger)
    expected = {
        worker.run_id_of(n): worker.expected_run(n, campaign.approvals)
        for n in range(campaign.runs)
    }

    lost = sorted(set(expected) - set(views))
    assert not lost, f"{len(lost)} runs were lost (never created): {lost[:10]} {where}"
    unfinished = {r: v.status.value for r, v in views.items() if v.status is not RunStatus.FINISHED}
    assert not unfinished, (
        f"{len(unfinished)} runs did not finish: {dict(list(unfinished.items())[:10])} {where}"
    )

    all_keys: dict[str, tuple[str, int]] = {}
    failed_effects = 0
    for run_id, exp in expected.items():
        view = views[run_id]
        assert view.seqs == list(range(1, len(view.seqs) + 1)), (
            f"{run_id}: journal has gaps {where}"
        )
        assert view.last_seq == len(view.seqs), (
            f"{run_id}: run record says last_seq {view.last_seq}, journal has {len(view.seqs)} events {where}"
        )
        assert view.kinds[0] is EventKind.RUN_STARTED and view.kinds[-1] is EventKind.FINISHED, (
            f"{run_id}: journal runs {view.kinds[0]} .. {view.kinds[-1]} {where}"
        )
        terminal = [
            k
            for k in view.kinds
            if k in (EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED)
        ]
        assert terminal == [EventKind.FINISHED], f"{run_id}: terminal events {terminal} {where}"
        parks = 1 if worker.needs_approval(int(run_id[4:]), campaign.approvals) else 0
        counts = [
            view.kinds.count(k)
            for k in (EventKind.RUN_STARTED, EventKind.INTERRUPTED, EventKind.RESUMED)
        ]
        assert counts == [1, parks, parks], (
            f"{run_id}: run_started, interrupted, resumed events {counts}, want [1, {parks}, {parks}] {where}"
        )
        assert view.pending == 0, (
            f"{run_id}: finished with {view.pending} pending interrupts {where}"
        )
        assert view.state == exp.state, (
            f"{run_id}: final state differs from the model {where}\n got: {view.state}\n want: {exp.state}"
        )
        assert set(view.recorded) == set(exp.effects), (
            f"{run_id}: journal recorded effects {sorted(view.recorded)}, the model expects "
            f"{sorted(exp.effects)} {where}"
        )
        for key, results in view.recorded.items():
            assert len(results) == 1, (
                f"{key}: {len(results)} effect_finished results in the journal {where}"
            )
            assert results[0]["value"] == exp.effects[key][1], (
                f"{key}: journal recorded {results[0]}, the model expects value {exp.effects[key][1]} {where}"
            )
        for key, count in view.failed_keys.items():
            # Only the flaky "total" fails, and its retry reuses the key (then finishes).
            assert key in exp.effects and exp.effects[key][0] == "total", (
                f"{key}: unexpected failed effect in the journal {where}"
            )
            failed_effects += count
        all_keys.update(exp.effects)

    # The ledger: every expected effect applied exactly once, nothing else.
    missing = sorted(set(all_keys) - set(ledger.applied))
    assert not missing, f"{len(missing)} effects were never applied: {missing[:10]} {where}"
    unexpected = sorted(set(ledger.applied) - set(all_keys))
    assert not unexpected, (
        f"{len(unexpected)} unexpected effects were applied: {unexpected[:10]} {where}"
    )
    assert set(ledger.attempts) == set(ledger.applied), (
        f"attempted keys differ from applied keys {where}"
    )

    reexecuted: list[str] = []
    extra = 0
    for key, (name, value) in all_keys.items():
        run_id, effect, applied_value, first_attempt = ledger.applied[key]
        assert (run_id, effect, applied_value) == (key.split(":")[0], name, value), (
            f"{key}: ledger applied {(run_id, effect, applied_value)}, expected {name}={value} {where}"
        )
        attempts = ledger.attempts[key]
        assert first_attempt == attempts[0][0], (
            f"{key}: applied by a later attempt than its first {where}"
        )
        recorded_exec = views[run_id].recorded[key][0]["exec"]
        # The journal's result is the last execution: nothing ran again after it was committed.
        assert recorded_exec == attempts[-1][0], (
            f"{key}: executed again after its effect_finished was committed: the journal recorded "
            f"execution {recorded_exec}, the ledger saw executions {attempts} (id, generation, phase) "
            f"{where}; kills: {campaign.kill_log}"
        )
        generations = [gen for _, gen, _ in attempts]
        assert len(set(generations)) == len(generations), (
            f"{key}: executed {len(attempts)} times within one process (generations {generations}); "
            f"re-execution is allowed only after a crash {where}"
        )
        if len(attempts) > 1:
            reexecuted.append(key)
            extra += len(attempts) - 1

    live_effects_bound = 60 * 4  # worker --max-live x most parallel tasks of a run
    assert extra <= campaign.kills * live_effects_bound, (
        f"{extra} re-executions for {campaign.kills} kills {where}"
    )
    if campaign.approvals:
        for exp in expected.values():
            for key in exp.before_interrupt:
                phases = [phase for _, _, phase in ledger.attempts[key]]
                assert all(p == "run" for p in phases), (
                    f"{key}: an effect made before the interrupt ran again after the resume "
                    f"(phases {phases}) {where}"
                )
    return Audit(len(expected), len(all_keys), reexecuted, extra, failed_effects)


def _report(name: str, campaign: Campaign, result: Audit, started: float) -> None:
    print(
        f"\n{name}: seed {campaign.seed}, {result.runs} runs, {result.effects} effects, "
        f"{campaign.kills} kills ({campaign.early_exits} workers finished before their kill), "
        f"{campaign.generation} worker processes, {len(result.reexecuted)} keys re-executed with the "
        f"same key ({result.extra_executions} extra executions, deduplicated by the ledger), "
        f"{result.failed_effects} failed effect attempts retried, "
        f"{len(campaign.stranded)} runs stranded by the resume bug, "
        f"{time.monotonic() - started:.1f}s"
    )
    for line in campaign.kill_log:
        print("  " + line)


# -- fixtures --------------------------------------------------------------------------------------


def _seed() -> int:
    given = os.environ.get("MAINSPRING_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(1 << 31)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on a fresh PostgreSQL schema, dropped afterwards (skips if unreachable)."""
    base = require_postgres()
    schema = f"crash_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        anyio.run(drop_postgres_schema, PG_URL, schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, int]:
    """(name, store URL, number of runs): a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'journal.db'}", 300
    url: str = request.getfixturevalue("pg_url")
    return "postgres", url, 200


def _campaign(
    backend: tuple[str, str, int], durability: str, tmp_path: Path, *, approvals: bool
) -> Campaign:
    _, url, runs = backend
    seed = _seed()
    print(f"\ncrash test seed: {seed} (replay with MAINSPRING_CRASH_SEED={seed})")
    return Campaign(
        url, tmp_path / "ledger.db", runs, durability, seed, tmp_path, approvals=approvals
    )


async def _verify_chain(url: str) -> Any:
    from mainspring.guard.audit import verify

    async with Runtime.open(url, recover="off") as rt:
        return await verify(rt)


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_sigkill_at_random_moments_loses_and_repeats_nothing(
    backend: tuple[str, str, int], durability: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    campaign = _campaign(backend, durability, tmp_path, approvals=False)
    campaign.kill_at_random("run", campaign.rng.randint(3, 5))
    done = campaign.finish("run")
    assert done == f"DONE finished={campaign.runs}", f"{done} {campaign.where()}"
    result = audit(campaign)
    _report(f"{backend[0]}/{durability}", campaign, result, started)
    # Every takeover continued its run's hash chain, and every anchor is in place.
    chain = anyio.run(_verify_chain, campaign.store_url)
    assert chain.ok, [str(f) for f in chain.findings[:5]]
    if campaign.kills >= 3:
        assert result.reexecuted, (
            f"{campaign.kills} kills and not one effect re-executed with its key: the path the test "
            f"exists for was not exercised {campaign.where()}; kills: {campaign.kill_log}"
        )


def test_sigkill_while_runs_wait_on_interrupts(
    backend: tuple[str, str, int], tmp_path: Path
) -> None:
    started = time.monotonic()
    campaign = _campaign(backend, "sync", tmp_path, approvals=True)
    parked = sum(worker.needs_approval(n, True) for n in range(campaign.runs))

    # Phase 1: runs work and park; kills land while some are parked and others mid-flight.
    campaign.kill_at_random("run", campaign.rng.randint(2, 3), once_parked=10)
    done = campaign.finish("run")
    assert done == f"DONE finished={campaign.runs - parked} interrupted={parked}", (
        f"{done} {campaign.where()}"
    )
    views = anyio.run(_read_runs, campaign.store_url, campaign.runs)
    waiting = [
        v.run_id for v in views.values() if v.status is RunStatus.INTERRUPTED and v.pending == 1
    ]
    assert len(waiting) == parked, (
        f"{len(waiting)} runs parked on one interrupt, want {parked} {campaign.where()}"
    )
    kills_while_parking = campaign.kills
    assert campaign.kills_while_parked >= 1, (
        f"no kill landed while runs were parked {campaign.where()}; kills: {campaign.kill_log}"
    )

    # Phase 2: new processes resume every parked run, and are killed mid-resume.
    span = (campaign.runs - parked, campaign.runs)
    campaign.kill_at_random("resume", campaign.rng.randint(2, 3), span=span, latest=0.6)
    done = campaign.finish("resume")
    assert done == f"DONE finished={campaign.runs}", f"{done} {campaign.where()}"
    result = audit(campaign)
    _report(
        f"{backend[0]}/interrupts ({kills_while_parking} kills before, "
        f"{campaign.kills - kills_while_parking} during resumes)",
        campaign,
        result,
        started,
    )
    if not STRANDED_RUNS_BUG:
        assert not campaign.stranded, (
            f"runs stranded 'interrupted' after a resume and a kill: {campaign.stranded} {campaign.where()}"
        )


# -- engine bugs found by the crash tests (and regressions) ----------------------------------------------------------


class Ask(TypedDict, total=False):
    answer: str
    after: int


_HANG_AFTER_EFFECT = True


def _ask_graph() -> Any:
    g = Graph(Ask, name="resume-then-crash")

    @g.node
    async def ask(s: Ask, ctx: Context) -> dict[str, Any]:
        answer = await ctx.interrupt("ok?")
        after = await ctx.step("after", lambda: 1)
        if _HANG_AFTER_EFFECT:
            await anyio.sleep_forever()  # the process dies here, before the step boundary
        return {"answer": answer, "after": after}

    g.edge(START, "ask")
    g.edge("ask", END)
    return g.compile()


@pytest.mark.anyio
async def test_resume_then_crash_leaves_run_recoverable(tmp_path: Path) -> None:
    global _HANG_AFTER_EFFECT
    _HANG_AFTER_EFFECT = True
    app = _ask_graph()
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    async with Runtime.open(url, graphs=[app]) as first:
        parked = await (await first.start(app, {}, run_id="r1")).wait()
        assert parked.status is RunStatus.INTERRUPTED
    # A second process resumes the run, makes an effect (committed), then "dies": its runtime is
    # abandoned without draining, which leaves the journal exactly as a SIGKILL would.
    async with Runtime.open(
        url, graphs=[app], recover="off", lease_ttl=0.2, drain_timeout=0
    ) as second:
        await second.resume("r1", "yes")
        with anyio.fail_after(10):
            while not any(e.kind is EventKind.EFFECT_FINISHED for e in await second.events("r1")):
                await anyio.sleep(0.01)
        record = await second.get_run("r1")
    await anyio.sleep(0.3)  # the dead runtime's lease expires
    _HANG_AFTER_EFFECT = False
    async with Runtime.open(url, graphs=[app]) as third:  # recovery on open
        with anyio.fail_after(10):
            outcome = await third.handle("r1").wait()
    assert (record.status, outcome.status, outcome.state) == (
        RunStatus.RUNNING,
        RunStatus.FINISHED,
        {"answer": "yes", "after": 1},
    ), (
        f"record after the resume: {record.status}; after recovery: {outcome.status}, {outcome.state}"
    )


_OPEN_AND_CLOSE = """
import sys, anyio
from mainspring import Runtime

async def main() -> None:
    async with Runtime.open(sys.argv[1]):
        pass

anyio.run(main)
print("closed")
"""


@pytest.mark.postgres
def test_runtime_on_postgres_closes_cleanly(pg_url: str) -> None:
    """Regression: closing a Runtime on PostgreSQL raised RuntimeError ("Attempted to exit a
    cancel scope that isn't the current tasks's current cancel scope"): Runtime.__aexit__ closes
    the store inside a shielded CancelScope, and PostgresStore.aclose() exited a task group that
    open() had entered. Every crash worker on PostgreSQL failed at exit. In a process of its own,
    since a failed exit leaves the task's cancel scopes unbalanced.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_CLOSE, pg_url],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "closed", proc.stderr[-3000:]
