"""mainspring.client against a real uvicorn server on 127.0.0.1 running create_app.

The async client and the sync facade (through its portal, from a worker thread: the
server runs in the test's event loop), errors as Mainspring's exceptions, and a stream
that survives the server going away mid-run: none of the run's events lost or twice.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI

from mainspring import Runtime
from mainspring.client import (
    AsyncClient,
    AuthError,
    Client,
    ClientError,
    ClientTimeoutError,
    GraphNotFoundError,
    NotFoundError,
    Reconnect,
    Run,
    ServerUnreachableError,
    StreamLostError,
    ThreadBusyError,
)
from mainspring.errors import (
    RunExistsError,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    StateError,
)
from mainspring.events import Event, EventKind, ModelDelta
from mainspring.server import ServerConfig, create_app
from mainspring.server.keys import Scope, key_store_from_url
from mainspring.status import RunStatus
from tests.cli_graphs import broken, support
from tests.client_graphs import approvals
from tests.stream_graphs import ANSWER, asker, gateway

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parent.parent / "docs" / "client.md"

GRAPHS = [support, broken, approvals]
REFUND = {"text": "I want a refund", "amount": 250}
QUICK = Reconnect(attempts=40, backoff=0.02, max_backoff=0.2)


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """``app`` under uvicorn on 127.0.0.1:``port`` (0: a free one) for the block.

    The socket listens before uvicorn starts, so early requests wait in its backlog. On
    exit, open streams get a second to end before uvicorn cuts them: a server that goes
    away mid-stream, as a restart does.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield url
            finally:
                server.should_exit = True
    finally:
        sock.close()


def app_on(rt: Runtime, **config: Any) -> FastAPI:
    return create_app(rt, graphs=GRAPHS, config=ServerConfig(auth=False, **config))


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with Runtime.open(f"sqlite:///{tmp_path / 'client.db'}", graphs=GRAPHS) as runtime:
        yield runtime


@pytest.fixture
async def url(rt: Runtime) -> AsyncIterator[str]:
    async with served(app_on(rt)) as base:
        yield base


def journal(events: list[Event]) -> list[dict[str, Any]]:
    return [e.to_json() for e in events]


async def test_the_async_client_mirrors_the_runtime(rt: Runtime, url: str) -> None:
    async with AsyncClient(url) as ms:
        assert {g.name for g in await ms.graphs()} == {"support", "broken", "approvals"}
        drawn = await ms.graph("support")
        assert drawn.mermaid and "classify" in drawn.mermaid
        assert {e["target"] for e in drawn.edges} >= {"refund", "answer"}

        # A run that parks: its outcome names the interrupt; approving it finishes the run.
        parked = await ms.start("support", REFUND, thread="t1", run_id="r1", wait=True)
        assert isinstance(parked, Run) and parked.outcome is not None
        assert parked.outcome.status is RunStatus.INTERRUPTED
        (ask,) = parked.outcome.interrupts
        assert ask.payload == {"approve_refund": 250}
        pending = await ms.interrupts(thread="t1")
        assert [(i.run_id, i.interrupt_id) for i in pending] == [("r1", ask.interrupt_id)]
        approved = await ms.approve("r1", ask.interrupt_id, wait=True)
        assert approved.outcome is not None and approved.outcome.status is RunStatus.FINISHED
        finished = await ms.wait("r1")
        assert finished.state["replies"] == ["refund issued"]

        # run(): to the end, the final state, as Runtime.run.
        state = await ms.run("support", {"text": "hello"}, thread="t2")
        assert state["replies"] == ["re: hello"]

        # Reads answer what the runtime answers.
        assert journal(await ms.events("r1")) == journal(await rt.events("r1"))
        assert journal(await ms.events("r1", after=3, limit=2)) == journal(
            await rt.events("r1", after=3, until=5)
        )
        resumed = await ms.events("r1", kinds=[EventKind.RESUMED])
        assert [e.kind for e in resumed] == [EventKind.RESUMED]
        record = await rt.get_run("r1")
        got = await ms.get_run("r1")
        assert (got.status, got.last_seq, got.thread) == (record.status, record.last_seq, "t1")
        assert got.usage is not None and got.usage["model_calls"] == 0
        early = await ms.state("r1", at=2)
        assert early.seq == 2 and early.status is RunStatus.RUNNING
        assert [r.run_id for r in await ms.list_runs(thread="t1")] == ["r1"]
        assert len(await ms.list_runs(status="finished")) == 2
        assert [r.run_id async for r in ms.iter_runs(graph="support", page=1)] == [
            r.run_id for r in await rt.list_runs(graph="support")
        ]
        assert {t.thread for t in await ms.list_threads()} == {"t1", "t2"}
        t1 = await ms.thread("t1")
        assert [r.run_id for r in t1.runs] == ["r1"] and t1.open_run_id is None

        # Time travel and cancel, through the server.
        assert (await ms.replay("r1")).ok
        forked = await ms.fork("r1", at=record.last_seq - 3, new_run_id="r1-fork", effects="reuse")
        assert forked.run_id == "r1-fork" and forked.parent_run_id is None
        again = await ms.start("support", REFUND, run_id="r3", wait=True)
        assert (await ms.cancel(again.run_id)).status is RunStatus.CANCELLED
        both = ["cancelled", "finished"]  # the API filters one status: the client merges
        assert [r.run_id for r in await ms.list_runs(status=both, limit=3)] == [
            r.run_id for r in await rt.list_runs(status=both, limit=3)
        ]


async def test_answers_the_server_refuses_are_mainspring_errors(rt: Runtime, url: str) -> None:
    async with AsyncClient(url) as ms:
        with pytest.raises(RunNotFoundError) as missing:
            await ms.get_run("nope")
        assert isinstance(missing.value, ClientError)
        assert (missing.value.status, missing.value.code) == (404, "run_not_found")
        assert missing.value.run_id == "nope" and "nope" in str(missing.value)
        with pytest.raises(GraphNotFoundError, match="no graph named 'ghost'"):
            await ms.start("ghost", {})
        with pytest.raises(NotFoundError) as no_thread:
            await ms.thread("nowhere")
        assert no_thread.value.code == "thread_not_found"
        with pytest.raises(StateError):  # the input does not fit the graph's state
            await ms.start("support", {"amount": "not a number", "unknown": 1})
        with pytest.raises(RunFailedError, match="cannot handle n=3"):
            await ms.run("broken", {"n": 3})
        await ms.start("support", {"text": "hi"}, run_id="once", wait=True)
        with pytest.raises(RunExistsError):  # the same id, asking something else
            await ms.start("support", {"text": "something else"}, run_id="once")
        await ms.start("support", REFUND, thread="busy", wait=True)  # parks: the thread is open
        with pytest.raises(ThreadBusyError) as busy:
            await ms.start("support", REFUND, thread="busy")
        assert isinstance(busy.value, RunStateError) and busy.value.status == 409
        with pytest.raises(ClientError) as invalid:
            await ms.state("nope", at=0)
        assert invalid.value.status == 422 and invalid.value.code == "invalid_request"
        with pytest.raises(RunNotFoundError):  # at once: asking again would change nothing
            async for _ in ms.stream("nope"):
                pass

    async with AsyncClient(
        "http://127.0.0.1:9", reconnect=Reconnect(attempts=2, backoff=0.01)
    ) as down:
        with pytest.raises(ServerUnreachableError, match="cannot reach the Mainspring server"):
            await down.get_run("r1")
        with socket.socket() as silent:  # listens (the kernel accepts), never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            slow = AsyncClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.2)
            with pytest.raises(ClientTimeoutError, match="did not answer in time"):
                await slow.get_run("r1")
            await slow.aclose()
        stream = down.stream("r1", after=4)
        with pytest.raises(StreamLostError, match=r"after=4"):
            async for _ in stream:
                pass
        assert stream.reconnects == 2


async def test_a_stream_resumes_across_a_server_restart_with_none_lost_or_twice(
    rt: Runtime,
) -> None:
    """The server goes away while a client follows a run; the run goes on meanwhile (its
    runtime outlives the server); a new server comes up on the same port. The client's
    stream reconnects with Last-Event-ID and hands out every event once, in order."""
    got: list[Event] = []
    parks = [anyio.Event(), anyio.Event()]
    ended = anyio.Event()

    async def follow(ms: AsyncClient, run_id: str) -> None:
        async with ms.stream(run_id) as stream:
            async for event in stream:
                got.append(event)
                if event.kind is EventKind.INTERRUPTED:
                    parks[sum(e.kind is EventKind.INTERRUPTED for e in got) - 1].set()
        assert stream.status is RunStatus.FINISHED
        assert stream.reconnects >= 1
        assert stream.last_seq == got[-1].seq
        ended.set()

    async with anyio.create_task_group() as tg:
        async with served(app_on(rt)) as url:
            ms = AsyncClient(url, reconnect=QUICK)
            run = await ms.start("approvals", {"text": "go"}, run_id="s1")
            tg.start_soon(follow, ms, run.run_id)
            await parks[0].wait()
        # The server is gone (its stream cut); the run is answered and moves on without it.
        (first,) = (await rt.outcome("s1")).interrupts
        handle = await rt.resume("s1", "yes", interrupt_id=first.id)
        assert (await handle.wait()).status is RunStatus.INTERRUPTED  # parked on "second"
        port = int(url.rsplit(":", 1)[1])
        async with served(app_on(rt), port=port):
            await parks[1].wait()  # caught up from the journal after reconnecting
            outcome = (await ms.get_run("s1")).outcome
            assert outcome is not None
            (second,) = outcome.interrupts
            await ms.approve("s1", second.interrupt_id)  # and live events after it
            with anyio.fail_after(30):
                await ended.wait()
        await ms.aclose()

    recorded = await rt.events("s1")
    assert [e.seq for e in got] == list(range(1, recorded[-1].seq + 1))
    assert journal(got) == journal(recorded)
    assert (await rt.outcome("s1")).state["log"] == ["first: yes", "second: True", "done"]


def _scripted(url: str) -> dict[str, Any]:
    """What a plain script does with the sync client (no event loop of its own)."""
    with Client(url) as ms:
        parked = ms.start("support", REFUND, run_id="sync1", wait=True)
        assert isinstance(parked, Run) and parked.outcome is not None
        iid = parked.outcome.interrupts[0].interrupt_id
        ms.resume("sync1", {"approved": False}, interrupt_id=iid)
        kinds = [e.kind for e in ms.stream("sync1")]
        try:
            ms.get_run("missing")
        except RunNotFoundError as exc:
            missing = str(exc)
        return {
            "state": ms.run("support", {"text": "sync"}),
            "kinds": kinds,
            "outcome": ms.get_run("sync1").outcome,
            "missing": missing,
            "runs": [r.run_id for r in ms.iter_runs()],
        }


async def test_the_sync_client_is_the_same_calls_through_a_portal(url: str) -> None:
    seen = await anyio.to_thread.run_sync(_scripted, url)
    assert seen["state"]["replies"] == ["re: sync"]
    assert seen["kinds"][0] is EventKind.RUN_STARTED and seen["kinds"][-1] is EventKind.FINISHED
    assert EventKind.RESUMED in seen["kinds"]
    assert seen["outcome"].state["replies"] == ["refund declined"]
    assert "missing" in seen["missing"]
    assert len(seen["runs"]) == 2 and "sync1" in seen["runs"]


async def test_api_keys_from_the_argument_or_the_environment(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = key_store_from_url("memory://")
    app = create_app(rt, graphs=GRAPHS, keys=keys)
    async with served(app) as url:
        async with AsyncClient(url, api_key="") as anonymous:
            with pytest.raises(AuthError) as refused:
                await anonymous.list_runs()
            assert refused.value.status == 401 and "API key" in str(refused.value)
        _, reader = await keys.create("acme", frozenset({Scope.READ}))
        async with AsyncClient(url, api_key=reader) as ms:
            assert (await ms.me())["tenant"] == "acme"
            with pytest.raises(AuthError) as scoped:
                await ms.start("support", {"text": "hi"})
            assert scoped.value.status == 403 and "'run' scope" in str(scoped.value)
        _, runner = await keys.create("acme", frozenset({Scope.READ, Scope.RUN}))
        monkeypatch.setenv("MAINSPRING_API_KEY", runner)
        monkeypatch.setenv("MAINSPRING_SERVER", url)
        async with AsyncClient() as ms:
            assert (await ms.run("support", {"text": "hi"}))["replies"] == ["re: hi"]
            assert [r.tenant for r in await ms.list_runs()] == ["acme"]


async def test_the_examples_of_docs_client_md_run_as_shown(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ``python`` block of the page, run as a script against the server (in a thread
    of its own: the server runs in this test's event loop), prints what the page says."""
    page = DOCS.read_text()
    examples = re.findall(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", page, re.S)
    assert len(examples) == 2
    monkeypatch.setenv("MAINSPRING_SERVER", url)
    for code, shown in examples:

        def script(code: str = code) -> None:
            exec(compile(code, str(DOCS), "exec"), {"__name__": "__main__"})

        await anyio.to_thread.run_sync(script)
        assert capsys.readouterr().out == shown


def test_a_script_that_never_closes_its_client_still_exits() -> None:
    script = "from mainspring.client import Client\nms = Client('http://127.0.0.1:9')\nprint('ok')"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


async def test_tokens_arrive_as_model_deltas_between_the_effect_start_and_its_end(
    tmp_path: Path,
) -> None:
    async with Runtime.open(
        f"sqlite:///{tmp_path / 'tokens.db'}", graphs=[asker], models=gateway()
    ) as runtime:
        async with (
            served(create_app(runtime, graphs=[asker], config=ServerConfig(auth=False))) as url,
            AsyncClient(url) as ms,
        ):
            run = await ms.start("asker", {"question": "fox?", "delay": 0.3})
            got = [e async for e in ms.stream(run.run_id, tokens=True, until="park")]
        kinds = [e.kind for e in got]
        deltas = [e.data for e in got if isinstance(e.data, ModelDelta)]
        started = kinds.index(EventKind.EFFECT_STARTED)
        finished = kinds.index(EventKind.EFFECT_FINISHED)
        assert deltas and all(
            started < i < finished for i, k in enumerate(kinds) if k is EventKind.MODEL_DELTA
        )
        assert "".join(d.text for d in deltas) == ANSWER
        journaled = [e for e in got if e.kind is not EventKind.MODEL_DELTA]
        assert journal(journaled) == journal(await runtime.events(run.run_id))


async def test_a_request_refused_for_its_rate_is_sent_again_after_retry_after(
    rt: Runtime,
) -> None:
    keys = key_store_from_url("memory://")
    app = create_app(rt, graphs=GRAPHS, keys=keys, config=ServerConfig(rate=1.0, burst=1))
    async with served(app) as url:
        _, key = await keys.create("acme", frozenset({Scope.READ}))
        async with AsyncClient(url, api_key=key, rate_retries=0) as impatient:
            await impatient.list_runs()  # the burst
            with pytest.raises(ClientError) as limited:
                await impatient.list_runs()
            assert (limited.value.status, limited.value.code) == (429, "rate_limited")
        async with AsyncClient(url, api_key=key) as patient:
            assert await patient.list_runs() == []  # waited for Retry-After, then answered


async def test_reject_and_edit_answer_with_what_the_contract_says(rt: Runtime, url: str) -> None:
    async with AsyncClient(url) as ms:

        async def parked(run_id: str) -> str:
            run = await ms.start("support", REFUND, run_id=run_id, wait=True)
            assert isinstance(run, Run) and run.outcome is not None
            return run.outcome.interrupts[0].interrupt_id

        declined = await ms.reject("no", await parked("no"), reason="too much", wait=True)
        edited = await ms.edit("edited", await parked("edited"), {"amount": 10}, wait=True)
        answers = {}
        for done in (declined, edited):
            assert done.outcome is not None and done.outcome.state["replies"] == ["refund declined"]
            (resumed,) = await ms.events(done.run_id, kinds=["resumed"])
            answers[done.run_id] = list(resumed.data["values"].values())
        assert answers == {
            "no": [{"approve": False, "reason": "too much"}],
            "edited": [{"args": {"amount": 10}}],
        }
