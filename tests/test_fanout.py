"""Live events across processes: the event fan-out (``mainspring.fanout``) and the hub.

A server (``create_app`` over a Runtime on a PostgreSQL schema, uvicorn here) streams a
run that ANOTHER process drives step by step (``tests/fanout_worker.py``: a Runtime on
the same schema, each step let go by a line on its stdin). The hub's polls are set to an
hour: only the fan-out can deliver (or, after a lost link, its resync).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx
import pytest

from mainspring import Runtime
from mainspring.events import Event
from mainspring.fanout import Announcement, EventFanout, FanoutError, decode, encode, fanout_from
from mainspring.server import ServerConfig, create_app
from mainspring.server.routes.streams import hub_of
from mainspring.status import RunStatus
from mainspring.store import store_from_url
from tests.conftest import postgres_schema_url, service_missing
from tests.stream_support import Received, Served, read_sse, serve
from tests.test_session_memory import REDIS_URL, redis_unavailable

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0


# -- the protocol and the writing side, without services ------------------------------------


def test_payloads_round_trip_and_name_their_store() -> None:
    heard = Announcement("thread:a:b", 42, "interrupted")
    assert encode("s1", heard) == "s1:thread:a:b:42:interrupted"
    assert decode("s1", encode("s1", heard)) == heard
    assert decode("s1", "s1:r:7:") == Announcement("r", 7, None)
    assert decode("s1", "s10:r:7:") is None  # another schema on the same channel
    assert decode("s1", "s1:r:x:") is None and decode("s1", "s1::7:") is None


class Held:
    """A transport whose sends wait for the test; what it sent, batch by batch."""

    name = "held"

    def __init__(self) -> None:
        self.batches: list[list[Announcement]] = []
        self.go = anyio.Event()
        self.fail = False

    async def open(self, store: object) -> None:
        pass

    async def send(self, batch: Sequence[Announcement]) -> None:
        self.batches.append(list(batch))
        await self.go.wait()
        if self.fail:
            raise ConnectionError("down")

    async def listen(self, heard: Any, ready: Any) -> None:
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        pass


def _events(*seqs: int) -> list[Event]:
    return cast(list[Event], [SimpleNamespace(seq=seq) for seq in seqs])


async def _until(condition: Any, what: str, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):  # a deadline for a hang, never a measured time
        while not condition():
            await anyio.sleep(0.01)


async def test_commits_of_a_run_coalesce_and_a_full_buffer_drops() -> None:
    held = Held()
    fanout = EventFanout(held, buffer=2)
    async with Runtime.open("memory://", fanout=fanout) as rt:
        assert rt.fanout is fanout
        fanout.committed("a", _events(1, 2), RunStatus.RUNNING)
        await _until(lambda: held.batches, "the first send")
        # While it is in flight: a's commits make one announcement, its status the latest.
        fanout.committed("a", _events(3), RunStatus.INTERRUPTED)
        fanout.committed("a", _events(4), None)
        fanout.committed("b", _events(1), None)
        fanout.committed("c", _events(1), None)  # past buffer=2: dropped, counted
        held.go.set()
        await _until(lambda: len(held.batches) == 2, "the second send")
        assert held.batches == [
            [Announcement("a", 2, "running")],
            [Announcement("a", 4, "interrupted"), Announcement("b", 1, None)],
        ]
        assert fanout.dropped == 1 and fanout.sent == 3
        held.fail = True
        fanout.committed("a", _events(5), None)  # a failed send is dropped, not retried
        await _until(lambda: fanout.dropped == 2, "the failed send")
        held.fail = False
        fanout.committed("d", _events(9), RunStatus.FINISHED)
        await _until(lambda: held.batches[-1] == [Announcement("d", 9, "finished")], "d")


async def test_a_run_s_end_is_announced_before_its_runtime_closes() -> None:
    held = Held()
    held.go.set()
    fanout = EventFanout(held)
    async with Runtime.open("memory://", fanout=fanout):
        pass
    assert fanout.sent == 0
    async with Runtime.open("memory://", fanout=fanout) as rt:
        run = await rt.start(_stepper(), {"steps": 2})
        await run.wait()
    assert held.batches and held.batches[-1][-1].status == "finished"


def _stepper() -> Any:
    from tests.fanout_worker import STEP, stepper

    for _ in range(10):
        STEP.release()
    return stepper


def test_bad_choices_say_what_to_give(tmp_path: Path) -> None:
    sqlite = store_from_url(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(FanoutError, match=r"needs a PostgreSQL store.*redis://"):
        fanout_from("pg", sqlite)
    with pytest.raises(FanoutError, match="is not a fan-out; give 'auto', 'pg'"):
        fanout_from("kafka://x", sqlite)
    assert fanout_from(None, sqlite) is None and fanout_from("off", sqlite) is None
    assert fanout_from("auto", sqlite) is None
    assert fanout_from("redis://127.0.0.1:6379/0", sqlite) is not None


async def test_a_store_of_one_process_has_nothing_to_fan_out() -> None:
    with pytest.raises(FanoutError, match="lives in one process"):
        async with Runtime.open("memory://", fanout=REDIS_URL):
            pass


# -- across processes: a server follows a run another process drives --------------------


@pytest.fixture(params=["pg", "redis"])
async def fanout_choice(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        if (reason := redis_unavailable()) is not None:
            service_missing(reason)
        return REDIS_URL
    return "pg"


class Worker:
    """The other process: ``step()`` lets one step of its run go."""

    def __init__(self, url: str, fanout: str, run_id: str, steps: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fanout_worker", url, fanout, run_id, str(steps)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.last_seq = 0

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the worker ended (exit {self.proc.poll()})"
        if line.startswith("committed "):
            self.last_seq = int(line.split()[1])
        return line.strip()

    async def wait_for(self, what: str) -> None:
        with anyio.fail_after(60):
            while not (await anyio.to_thread.run_sync(self._line)).startswith(what):
                pass

    async def step(self) -> None:
        """One step, committed (its events are in the journal when this returns)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        await self.wait_for("committed")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_schema_url() as url:
        yield url


@pytest.fixture
async def server(pg_url: str, fanout_choice: str) -> AsyncIterator[Served]:
    config = ServerConfig(
        auth=False, console=False, heartbeat=0.5, stream_poll=HOUR, stream_safety_poll=HOUR
    )
    async with Runtime.open(pg_url, fanout=fanout_choice, recover="off") as rt:
        assert rt.fanout is not None and rt.fanout.name == fanout_choice.partition(":")[0]
        async with serve(create_app(rt, config=config)) as served:
            yield served


async def _follow(served: Served, run_id: str, into: Received, **options: Any) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await read_sse(client, f"{served.url}/v1/runs/{run_id}/stream", into=into, **options)


async def _journal(served: Served, run_id: str) -> list[dict[str, Any]]:
    rt: Runtime = served.app.state.mainspring.runtime
    return [e.to_json() for e in await rt.events(run_id)]


async def test_a_run_driven_by_another_process_streams_live_every_event_once(
    pg_url: str, fanout_choice: str, server: Served
) -> None:
    steps = 6
    worker = Worker(pg_url, fanout_choice, "r-fan", steps)
    try:
        await worker.wait_for("ready")
        fanout = server.app.state.mainspring.runtime.fanout
        got = Received()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_follow, server, "r-fan", got)
            await _until(lambda: fanout.listening, "the server's fan-out listening")
            for _ in range(steps):
                await worker.step()
                # Polls are an hour apart: only the announcement can bring it.
                await _until(lambda: got.seqs and got.seqs[-1] >= worker.last_seq, "the step")
            await worker.wait_for("done")
        journal = await _journal(server, "r-fan")
        assert got.journaled == journal  # every event, in order, once
        assert got.end == {"status": "finished", "seq": journal[-1]["seq"]}
        # A client coming back with Last-Event-ID reads the rest from the journal.
        tail = Received()
        await _follow(server, "r-fan", tail, headers={"Last-Event-ID": str(journal[2]["seq"])})
        assert tail.journaled == journal[3:] and tail.end == got.end
    finally:
        worker.close()


async def _kill_listener(served: Served) -> None:
    """End the server's listening connection under it, as a network or server would."""
    transport = served.app.state.mainspring.runtime.fanout.transport
    if transport.name == "pg":
        import asyncpg

        pid = transport.listener.server_pid
        conn = await asyncpg.connect(served.app.state.mainspring.runtime.store._dsn)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()
    else:
        import redis.asyncio as redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            name = f"mainspring-events:{transport.key}"
            ours = [c for c in await client.client_list("pubsub") if c.get("name") == name]
            assert len(ours) == 1, ours
            await client.client_kill_filter(_id=ours[0]["id"])
        finally:
            await client.aclose()


async def test_an_announcement_lost_with_the_link_is_recovered_on_relisten(
    pg_url: str, fanout_choice: str, server: Served
) -> None:
    worker = Worker(pg_url, fanout_choice, "r-lost", 3)
    rt: Runtime = server.app.state.mainspring.runtime
    fanout = rt.fanout
    assert fanout is not None
    transport = fanout.transport
    relisten = anyio.Event()
    listen = transport.listen

    async def held_listen(heard: Any, ready: Any) -> None:
        await relisten.wait()  # the link stays down until the test has committed a step
        await listen(heard, ready)

    try:
        await worker.wait_for("ready")
        got = Received()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_follow, server, "r-lost", got)
            await _until(lambda: fanout.listening, "the server's fan-out listening")
            await worker.step()
            await _until(lambda: got.seqs and got.seqs[-1] >= worker.last_seq, "step 1")
            transport.listen = held_listen  # type: ignore[method-assign]
            await _kill_listener(server)
            await _until(lambda: not fanout.listening, "the lost link noticed")
            await worker.step()  # announced while nobody listens: lost
            relisten.set()  # back: every run followed from elsewhere is read again
            await _until(lambda: got.seqs and got.seqs[-1] >= worker.last_seq, "step 2")
            await worker.step()  # and announcements flow again
            await worker.wait_for("done")
        assert got.journaled == await _journal(server, "r-lost")
        assert got.end is not None and got.end["status"] == "finished"
    finally:
        worker.close()


async def test_a_crowd_of_subscribers_of_a_run_driven_elsewhere_shares_its_reads(
    pg_url: str, fanout_choice: str, server: Served
) -> None:
    worker = Worker(pg_url, fanout_choice, "r-crowd", 4)
    rt: Runtime = server.app.state.mainspring.runtime
    try:
        await worker.wait_for("ready")
        crowd = [Received() for _ in range(8)]
        reads = 0
        read = rt.store.read

        async def counted(*args: Any, **kwargs: Any) -> list[Event]:
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)

        rt.store.read = counted  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            for got in crowd:
                tg.start_soon(_follow, server, "r-crowd", got)
            await _until(lambda: hub_of(server.app.state.mainspring).feeds() == 1, "joined")
            await _until(lambda: all(got.seqs for got in crowd), "the crowd's first events")
            before = reads
            for _ in range(4):
                await worker.step()
                await _until(
                    lambda: all(g.seqs and g.seqs[-1] >= worker.last_seq for g in crowd), "step"
                )
            await worker.wait_for("done")
        journal = await _journal(server, "r-crowd")
        assert all(got.journaled == journal for got in crowd)
        assert reads - before <= 2 * 4 + 2  # a read per announcement (or two), not per client
    finally:
        worker.close()


async def test_odd_run_ids_cross_in_their_notification(pg_url: str) -> None:
    heard: list[Announcement] = []
    odd = "it's a \\ run:with:colons"
    async with (
        Runtime.open(pg_url, fanout="pg", recover="off") as writer,
        Runtime.open(pg_url, fanout="auto", recover="off") as reader,
    ):
        assert writer.fanout is not None and reader.fanout is not None
        reader.fanout.subscribe(heard.append, lambda: None)
        await _until(lambda: reader.fanout is not None and reader.fanout.listening, "listening")
        writer.fanout.committed(odd, _events(3), RunStatus.FINISHED)
        writer.fanout.committed("x" * 9000, _events(1), None)  # past NOTIFY's limit: not sent
        writer.fanout.committed("plain", _events(1), None)
        await _until(lambda: len(heard) >= 2, "the notifications")
        assert heard == [Announcement(odd, 3, "finished"), Announcement("plain", 1, None)]


def test_serve_says_what_to_give_for_a_bad_events(tmp_path: Path) -> None:
    from tests.test_cli import cli, one_error_line

    store = f"sqlite:///{tmp_path / 'x.db'}"
    one_error_line(
        cli("serve", "--no-auth", "--events", "kafka://x", store=store), 2, "give 'auto'"
    )
    one_error_line(
        cli("serve", "--no-auth", "--events", "pg", store=store), 2, "needs a PostgreSQL store"
    )


async def test_the_hub_takes_announcements_of_runs_driven_elsewhere_only() -> None:
    from mainspring.server.streams import StreamHub

    fanout = EventFanout(Held())
    async with Runtime.open("memory://", fanout=fanout) as rt:
        hub = StreamHub(rt, poll=0.5, safety_poll=7.0)
        assert hub.poll == 0.5  # not listening (this transport never is): the fast poll
        fanout.listening = True
        assert hub.poll == 7.0
        feed, _ = hub._join("r-elsewhere", tokens=False)
        hub.watch.watchers = 1
        fanout._heard(Announcement("r-elsewhere", 5, "interrupted"))
        assert (feed.last_seq, feed.status) == (5, RunStatus.INTERRUPTED)
        fanout._heard(Announcement("r-elsewhere", 3, "running"))  # late, older: ignored
        assert (feed.last_seq, feed.status) == (5, RunStatus.INTERRUPTED)
        fanout._heard(Announcement("r-other", 1, None))  # a step: not for the watchers
        fanout._heard(Announcement("r-other", 2, "finished"))  # a new status: noted
        assert hub.watch.since(0)[0] == ["r-elsewhere", "r-other"]
        fanout._resync()
        assert feed.stale
        hub.close()
        fanout._heard(Announcement("r-elsewhere", 9, None))  # a closed hub hears nothing
        assert feed.last_seq == 5


async def test_mainspring_serve_streams_a_worker_s_run_with_its_events_option(
    pg_url: str, fanout_choice: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MAINSPRING_EVENTS", None)
    events = [] if fanout_choice == "pg" else ["--events", fanout_choice]  # pg: the default
    serve_proc = subprocess.Popen(
        [sys.executable, "-c", "from mainspring.cli import main; main()", "serve", "--store", pg_url, "--no-auth",
         "--port", "0", "--log-level", "warning", *events],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=(tmp_path / "serve.err").open("w"),
        text=True,
    )  # fmt: skip
    worker = Worker(pg_url, fanout_choice, "r-serve", 3)
    try:
        assert serve_proc.stdout is not None
        first = await anyio.to_thread.run_sync(serve_proc.stdout.readline)
        assert first.startswith("mainspring serve: http://"), (tmp_path / "serve.err").read_text()
        url = first.split()[2].rstrip("/")
        await worker.wait_for("ready")
        got = Received()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_follow, Served(None, url, None), "r-serve", got)  # type: ignore[arg-type]
            for _ in range(3):
                await worker.step()
                await _until(lambda: got.seqs and got.seqs[-1] >= worker.last_seq, "the step")
            await worker.wait_for("done")
        assert got.seqs == list(range(1, len(got.seqs) + 1))  # each once, in order
        assert got.end is not None and got.end["status"] == "finished"
    finally:
        worker.close()
        serve_proc.terminate()
        serve_proc.wait()


async def test_a_queued_run_a_mainspring_worker_drives_streams_live_on_the_server(
    pg_url: str, fanout_choice: str, server: Served, tmp_path: Path
) -> None:
    from tests.stream_graphs import ticker

    rt: Runtime = server.app.state.mainspring.runtime
    await rt.start(ticker, {"limit": 8, "delay": 0.02}, run_id="r-queued", queue="fan")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MAINSPRING_EVENTS", None)
    events = [] if fanout_choice == "pg" else ["--events", fanout_choice]  # pg: the default
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "worker", "--store", pg_url, "--queue", "fan",
         "--graph", "tests.stream_graphs:ticker", "--concurrency", "1", *events],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "worker.err").open("w"),
    )  # fmt: skip
    try:
        got = Received()
        try:
            with anyio.fail_after(60):  # polls are an hour apart: only announcements bring it
                await _follow(server, "r-queued", got)
        except TimeoutError:
            pytest.fail(f"{got.seqs}; the worker: {(tmp_path / 'worker.err').read_text()}")
        assert got.journaled == await _journal(server, "r-queued")
        assert got.end is not None and got.end["status"] == "finished"
    finally:
        proc.terminate()
        proc.wait()
