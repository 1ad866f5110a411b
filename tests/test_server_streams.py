"""Live streams over a real uvicorn server: SSE and WebSocket, resumes, tokens, parks, bad clients.

Every stream is compared with the run's journal: the events a client gets (across any
reconnects) are the journal's, each once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import websockets

from mainspring import Runtime
from mainspring.engine.handle import RunHandle
from mainspring.models.sse import SSEParser
from mainspring.server import ServerConfig, create_app
from mainspring.server.detach import DETACH, detach
from mainspring.server.keys.protocol import KeyInfo, Principal
from mainspring.server.keys.protocol import Scope as KeyScope
from mainspring.server.keys.sqlite import SQLiteKeyStore
from mainspring.server.routes.streams import close_streams, hub_of
from mainspring.server.schemas import MAX_SEQ
from mainspring.server.streams import StreamHub
from tests.stream_graphs import ANSWER, GATES, asker, build_ticker, gateway, ticker
from tests.stream_support import Received, Served, read_sse, serve

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with Runtime.open(f"sqlite:///{tmp_path / 'streams.db'}", models=gateway()) as rt:
        yield rt


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[Served]:
    config = ServerConfig(auth=False, console=False, stall_timeout=1.0, heartbeat=0.5)
    app = create_app(runtime, graphs=[ticker, asker], config=config)
    async with serve(app) as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def hub(served: Served) -> StreamHub:
    return hub_of(served.app.state.mainspring)


async def journal(runtime: Runtime, run_id: str) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(msgspec.json.encode(e.to_json())) for e in await runtime.events(run_id)
    ]


async def until(condition: Any, what: str) -> None:
    """Wait for ``condition()`` to hold (the server's state, seen from the test)."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)


# -- the stream is the journal ------------------------------------------------------------


async def test_a_finished_run_streams_its_journal_then_end(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 5})
    await run.wait()
    got = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream")
    assert got.journaled == await journal(runtime, run.run_id)
    assert [e.id for e in got.events if e.event != "end"] == [str(s) for s in got.seqs]
    assert got.end == {"status": "finished", "seq": got.seqs[-1]}


async def test_a_live_run_streams_every_event_once(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 30, "delay": 0.01})
    got = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream")
    assert got.journaled == await journal(runtime, run.run_id)
    assert got.end is not None and got.end["status"] == "finished"


async def test_reconnects_with_last_event_id_mid_run_and_after_the_end(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 40, "delay": 0.01})
    url = f"{served.url}/v1/runs/{run.run_id}/stream"
    got = Received()
    await read_sse(client, url, into=got, stop_after=7)  # then the client goes away
    await read_sse(
        client, url, into=got, headers={"Last-Event-ID": got.last_id or ""}, stop_after=20
    )
    await run.wait()  # back only after the run ended
    await read_sse(client, url, into=got, headers={"Last-Event-ID": got.last_id or ""})
    assert got.journaled == await journal(runtime, run.run_id)  # none lost, none twice
    # ?after works as the header does; the header wins when it is later.
    tail = await read_sse(client, f"{url}?after=3", headers={"Last-Event-ID": "10"})
    assert tail.seqs[0] == 11 and tail.end == got.end
    tail = await read_sse(client, f"{url}?after=10", headers={"Last-Event-ID": "3"})
    assert tail.seqs[0] == 11


async def test_a_subscriber_behind_the_ring_reads_the_journal(runtime: Runtime) -> None:
    config = ServerConfig(auth=False, console=False, stream_buffer=4)
    app = create_app(runtime, graphs=[ticker], config=config)
    async with serve(app) as s, httpx.AsyncClient(timeout=30) as c:
        run = await runtime.start(ticker, {"limit": 60, "delay": 0.005})
        url = f"{s.url}/v1/runs/{run.run_id}/stream"
        first = Received()
        await read_sse(c, url, into=first, stop_after=3)
        feed = hub(s).feed(run.run_id)
        late = await read_sse(c, url)  # joins as the ring holds 4 events: the rest is read
        assert feed is None or len(feed.ring) <= 4
        assert late.journaled == await journal(runtime, run.run_id)
        assert hub(s).feeds() == 0  # nobody follows the run: nothing kept for it


async def test_tokens_stream_between_the_effect_start_and_its_end(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    GATES["tokens"] = gate = anyio.Event()
    run = await runtime.start(asker, {"question": "fox?", "gate": "tokens"})
    url = f"{served.url}/v1/runs/{run.run_id}/stream?until=park"
    got, plain = Received(), Received()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(read_sse, client, url, into=got))
        tg.start_soon(partial(read_sse, client, f"{url}&tokens=false", into=plain))
        while not (got.events and plain.events):  # both follow the run: let it answer
            await anyio.sleep(0.005)
        gate.set()
    kinds = [e.event for e in got.events]
    started, finished = kinds.index("effect_started"), kinds.index("effect_finished")
    tokens = [i for i, k in enumerate(kinds) if k == "model_delta"]
    assert tokens and started < min(tokens) and max(tokens) < finished
    text = "".join(msgspec.json.decode(got.events[i].data)["data"]["text"] for i in tokens)
    assert text == ANSWER
    assert got.end == {"status": "interrupted", "seq": got.seqs[-1]}
    assert "model_delta" not in [e.event for e in plain.events]
    assert got.journaled == plain.journaled == await journal(runtime, run.run_id)


async def test_the_stream_follows_a_park_and_a_resume(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    url = f"{served.url}/v1/runs/{run.run_id}/stream?tokens=false"
    got = Received()
    async with anyio.create_task_group() as tg:

        async def follow() -> None:
            await read_sse(client, url, into=got)

        tg.start_soon(follow)
        await run.wait()  # parked
        await until(lambda: "interrupted" in [e.event for e in got.events], "the park streamed")
        await runtime.resume(run.run_id, True)
    assert got.journaled == await journal(runtime, run.run_id)
    assert got.end is not None and got.end["status"] == "finished"


async def test_a_missing_run_is_404_before_any_stream(
    served: Served, client: httpx.AsyncClient
) -> None:
    response = await client.get(f"{served.url}/v1/runs/nope/stream")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "run_not_found"
    ws = served.url.replace("http", "ws")
    async with websockets.connect(f"{ws}/v1/runs/nope/ws") as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_the_websocket_stream_is_the_journal(runtime: Runtime, served: Served) -> None:
    run = await runtime.start(ticker, {"limit": 20, "delay": 0.005})
    ws = served.url.replace("http", "ws")
    frames: list[dict[str, Any]] = []
    async with websockets.connect(f"{ws}/v1/runs/{run.run_id}/ws?after=2") as conn:
        async for text in conn:
            frames.append(msgspec.json.decode(text))
    assert frames[-1]["event"] == "end" and frames[-1]["data"]["status"] == "finished"
    events = frames[:-1]
    assert [f["data"] for f in events] == (await journal(runtime, run.run_id))[2:]
    assert all(f["id"] == f["data"]["seq"] and f["event"] == f["data"]["kind"] for f in events)


# -- what a client gives: seqs and options ------------------------------------------------

#: Not a seq: Unicode digits (str.isdigit takes them; int refuses "²" and reads "٣" as 3),
#: signs, blanks, and numbers beyond MAX_SEQ (2**53 - 1, the largest integer JavaScript holds exactly) or too long for int() at all.
NOT_SEQS = ("²", "٣", "-1", "+1", " 1", "1.0", "abc", "", str(MAX_SEQ + 1), "9" * 5000)


async def _ws_refusal(url: str, **options: Any) -> tuple[int, str]:
    """The close code and reason of a WebSocket the server refuses after the handshake."""
    async with websockets.connect(url, **options) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def _sse(body: bytes) -> Received:
    got = Received()
    got.events += SSEParser().feed(body)
    return got


async def test_a_bad_after_is_422_on_sse_and_4422_on_websocket(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 3})
    await run.wait()
    ws = served.url.replace("http", "ws")
    for text in NOT_SEQS:
        url = httpx.URL(f"{served.url}/v1/runs/{run.run_id}/stream", params={"after": text})
        response = await client.get(url)
        assert response.status_code == 422, (text, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"].startswith("invalid request: query.after: Input should be a seq")
        code, reason = await _ws_refusal(f"{ws}{url.raw_path.decode()}".replace("/stream", "/ws"))
        assert (code, reason) == (4422, error["message"]), text
    # The largest seq a client may give is served (nothing after it, then the end).
    got = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream?after={MAX_SEQ}")
    last_seq = (await journal(runtime, run.run_id))[-1]["seq"]
    assert got.seqs == [] and got.end == {"status": "finished", "seq": last_seq}


async def test_a_bad_last_event_id_is_ignored_the_stream_starts_from_after(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 3})
    await run.wait()
    url = f"{served.url}/v1/runs/{run.run_id}/stream?after=2"
    journaled = (await journal(runtime, run.run_id))[2:]
    for text in (t for t in NOT_SEQS if t == t.strip()):  # (a header's blanks are not its)
        # A header is latin-1 on the wire: "²" is the byte 0xb2, "٣" its UTF-8 bytes.
        try:
            header = text.encode("latin-1")
        except UnicodeEncodeError:
            header = text.encode()
        response = await client.get(url, headers={b"Last-Event-ID": header})
        assert response.status_code == 200, (text, response.text)
        assert _sse(response.content).journaled == journaled, text
        if not text.isascii():
            continue  # the websockets client sends ASCII headers only (the check is shared)
        ws = url.replace("http", "ws").replace("/stream", "/ws")
        async with websockets.connect(ws, additional_headers={"Last-Event-ID": text}) as conn:
            frames = [msgspec.json.decode(m) async for m in conn]
        assert [f["data"] for f in frames[:-1]] == journaled, text


async def test_bad_tokens_or_until_are_refused_with_what_to_give(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 1})
    ws = served.url.replace("http", "ws")
    for query, message in (
        ("tokens=maybe", "query.tokens: Input should be a boolean: true or false"),
        ("tokens=²", "query.tokens: Input should be a boolean: true or false"),
        ("until=never", "query.until: Input should be 'end' or 'park'"),
    ):
        response = await client.get(f"{served.url}/v1/runs/{run.run_id}/stream?{query}")
        assert response.status_code == 422, query
        assert response.json()["error"]["message"].startswith(f"invalid request: {message}")
        code, reason = await _ws_refusal(f"{ws}/v1/runs/{run.run_id}/ws?{query}")
        assert code == 4422 and reason.startswith(f"invalid request: {message}"), query


async def test_end_carries_the_run_s_last_seq_not_a_later_after(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 3})
    await run.wait()
    url = f"{served.url}/v1/runs/{run.run_id}"
    last_seq = (await journal(runtime, run.run_id))[-1]["seq"]
    end = {"status": "finished", "seq": last_seq}
    got = await read_sse(client, f"{url}/stream?after=1000000")
    assert got.seqs == [] and got.end == end
    got = await read_sse(client, f"{url}/stream", headers={"Last-Event-ID": "1000000"})
    assert got.seqs == [] and got.end == end
    ws = url.replace("http", "ws")
    async with websockets.connect(f"{ws}/ws?after=1000000") as conn:
        frames = [msgspec.json.decode(m) async for m in conn]
    assert frames == [{"id": None, "event": "end", "data": end}]
    page = (await client.get(f"{url}/events?after=1000000")).json()
    assert page == {"events": [], "last_seq": last_seq, "more": False}


async def test_a_live_run_sends_nothing_until_it_passes_after(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 20, "delay": 0.01})
    got = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream?after=30")
    assert got.journaled == (await journal(runtime, run.run_id))[30:]
    assert got.seqs and got.end == {"status": "finished", "seq": got.seqs[-1]}


# -- bad clients never stop a run --------------------------------------------------------


async def test_a_client_that_disconnects_leaves_nothing_behind(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 200, "delay": 0.01})
    url = f"{served.url}/v1/runs/{run.run_id}/stream"
    await read_sse(client, url, stop_after=5)  # closes its connection mid-stream
    await until(lambda: hub(served).feeds() == 0, "the subscriber left the hub")
    assert (await runtime.get_run(run.run_id)).status.value == "running"
    await runtime.handle(run.run_id).cancel()


async def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    g = build_ticker()
    big = _big_ticker()
    config = ServerConfig(auth=False, console=False, stall_timeout=0.5, heartbeat=0.2)
    app = create_app(runtime, graphs=[g.compile(), big], config=config)
    caplog.set_level(logging.INFO, logger="mainspring.server.streams")
    async with serve(app) as s, httpx.AsyncClient(timeout=30) as c:
        run = await runtime.start(big, {"limit": 150, "delay": 0.0})
        host, port = s.url.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window
        stalled.connect((host, int(port)))
        stalled.sendall(
            f"GET /v1/runs/{run.run_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )  # and never reads a byte
        try:
            await until(lambda: hub(s).feed(run.run_id) is not None, "the stalled client joined")
            got = await read_sse(c, f"{s.url}/v1/runs/{run.run_id}/stream")
            assert got.journaled == await journal(runtime, run.run_id)
            assert (await run.wait()).status.value == "finished"
            await until(lambda: hub(s).feeds() == 0, "the stalled client was dropped")
        finally:
            stalled.close()
    assert any("stopped reading" in r.getMessage() for r in caplog.records)


def _big_ticker() -> Any:
    """A ticker whose every step writes ~64 KB: a stalled socket fills fast."""
    from typing import TypedDict

    from mainspring import END, START, Context, Graph

    class Big(TypedDict, total=False):
        n: int
        limit: int
        delay: float
        blob: str

    g = Graph(Big, name="big-ticker")

    @g.node
    async def tick(s: Big, ctx: Context) -> dict[str, Any]:
        n = s.get("n", 0) + 1
        return {"n": n, "blob": f"{n:08d}" * 8192}

    g.edge(START, "tick")
    g.branch(
        "tick", lambda s: "tick" if s.get("n", 0) < s["limit"] else END, {"tick": "tick", END: END}
    )
    return g.compile()


async def test_idle_streams_get_keep_alives(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    await run.wait()  # parked: nothing happens until a resume
    chunks: list[bytes] = []
    url = f"{served.url}/v1/runs/{run.run_id}/stream"
    async with client.stream("GET", url) as response:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            if b": keep-alive" in b"".join(chunks):
                break
    assert b"event: interrupted" in b"".join(chunks)


def _awaiting(coro: Any) -> list[str]:
    """The names of the coroutines a task's coroutine is awaiting, outermost first."""
    names: list[str] = []
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def test_an_idle_stream_went_through_the_guards_and_keeps_none_of_them(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    await run.wait()  # parked: its stream goes idle
    url = f"{served.url}/v1/runs/{run.run_id}/stream"
    async with client.stream("GET", url) as response:
        # The answer's start went through the middleware: the security headers, the id.
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert len(response.headers["x-request-id"]) == 16
        async for chunk in response.aiter_raw():
            if b": keep-alive" in chunk:
                break  # idle now
        chains = [_awaiting(task.get_coro()) for task in asyncio.all_tasks()]
        stream = [c for c in chains if "send_subscription" in c]
        assert len(stream) == 1, chains
        # Idle, the stream is awaited by the app's outermost layer, not inside its layers.
        assert stream[0].index("MainspringApp.__call__") + 1 == stream[0].index(
            "send_subscription"
        ), stream[0]
        layers = ("Shield", "Guard", "ServerErrorMiddleware", "ExceptionMiddleware", "Router")
        assert not [name for name in stream[0] if name.startswith(layers)], stream[0]
        assert hub(served).feeds() == 1
    await until(lambda: hub(served).feeds() == 0, "the subscriber left the hub")


async def test_subscribers_of_a_quiet_run_share_one_read_of_its_journal(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    await run.wait()  # parked: no commits fill the hub's ring
    url = f"{served.url}/v1/runs/{run.run_id}/stream?until=park"
    first = await read_sse(client, url)
    async with client.stream("GET", f"{served.url}/v1/runs/{run.run_id}/stream") as response:
        async for chunk in response.aiter_raw():
            if b": keep-alive" in chunk:
                break  # idle: it read the journal
        feed = hub(served).feed(run.run_id)
        assert feed is not None
        # The first reader's page is kept: the next subscribers take it from memory.
        assert [e.seq for e in feed.ring] == first.seqs
        again = await read_sse(client, url)
        assert again.seqs == first.seqs and again.end == first.end


def test_detach_runs_nothing_where_the_app_does_not_run_detached_parts() -> None:
    async def rest(receive: Any, send: Any) -> None:
        raise AssertionError("never run")

    assert detach({"type": "http"}, rest) is False  # the route then awaits it itself
    slot: list[Any] = []
    assert detach({"type": "http", DETACH: slot}, rest) is True
    assert detach({"type": "http", DETACH: slot}, rest) is False  # one rest per response
    assert slot == [rest]


# -- the console's live list -----------------------------------------------------------


async def test_watch_sends_runs_as_they_change(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    from mainspring.models.sse import SSEParser

    seen: list[dict[str, Any]] = []
    async with client.stream("GET", f"{served.url}/v1/watch") as response:
        assert response.status_code == 200
        parser = SSEParser()
        run: RunHandle | None = None
        async for chunk in response.aiter_raw():
            if run is None:  # the watch is on (its first batch came): now the run
                run = await runtime.start(ticker, {"limit": 3})
            for event in parser.feed(chunk):
                if event.event == "run":
                    seen.append(msgspec.json.decode(event.data))
            mine = [r for r in seen if r["run_id"] == run.run_id]
            if mine and mine[-1]["status"] == "finished":
                break
    assert run is not None
    assert mine[-1]["last_seq"] == len(await runtime.events(run.run_id))


# -- a server restart mid-stream ------------------------------------------------------------


def _start_server(db: Path, run_id: str, limit: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stream_server", str(db), run_id, str(limit)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.isdigit(), f"the server did not start (exit {proc.poll()})"
    return proc, f"http://127.0.0.1:{port}"


async def _restart_mid_stream(tmp_path: Path, limit: int, kills: int) -> None:
    db = tmp_path / "restart.db"
    run_id = "r-restart"
    got = Received()
    async with httpx.AsyncClient(timeout=30) as c:
        for round_ in range(kills + 1):
            proc, url = await anyio.to_thread.run_sync(_start_server, db, run_id, limit)
            try:
                headers = {"Last-Event-ID": got.last_id} if got.last_id else None
                stream = f"{url}/v1/runs/{run_id}/stream"
                if round_ < kills:  # read some, then the server dies under the client
                    await read_sse(
                        c, stream, into=got, headers=headers, stop_after=len(got.seqs) + 15
                    )
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    assert got.end is None, "the run ended before the kill: raise the limit"
                else:
                    await read_sse(c, stream, into=got, headers=headers)
            finally:
                proc.kill()
                proc.wait()
    async with Runtime.open(f"sqlite:///{db}", recover="off") as rt:
        assert got.journaled == await journal(rt, run_id)  # each event once, none lost
    assert got.end is not None and got.end["status"] == "finished"


async def test_a_server_killed_mid_stream_loses_nothing_for_a_client_that_reconnects(
    tmp_path: Path,
) -> None:
    await _restart_mid_stream(tmp_path, limit=60, kills=1)


@pytest.mark.slow
async def test_three_kills_mid_stream_lose_nothing(tmp_path: Path) -> None:
    await _restart_mid_stream(tmp_path, limit=300, kills=3)


# -- runs driven elsewhere, and the docs' client ---------------------------------------------


async def test_a_run_driven_by_another_process_is_followed_from_its_record(
    tmp_path: Path, runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    # Another runtime on the same file stands for another worker: the server does not
    # drive the run, so its stream follows the run's record and journal.
    async with Runtime.open(f"sqlite:///{tmp_path / 'streams.db'}", recover="off") as worker:
        run = await worker.start(ticker, {"limit": 10, "delay": 0.02})
        got = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream")
        assert got.journaled == await journal(worker, run.run_id)
        assert got.end is not None and got.end["status"] == "finished"


def _docs_example(name: str) -> str:
    text = (ROOT / "docs" / "server-streams.md").read_text()
    after = text.split(f"<!-- example: {name} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_docs_client_follows_a_run_to_its_end(
    runtime: Runtime, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_docs_example("follow"), "server-streams.md", "exec"), namespace)
    run = await runtime.start(ticker, {"limit": 5, "delay": 0.01})
    status = await anyio.to_thread.run_sync(namespace["follow"], served.url, run.run_id)
    assert status == "finished"
    printed = capsys.readouterr().out.split("\n")
    assert [line.split()[1] for line in printed if line] == [
        str(e["seq"]) for e in await journal(runtime, run.run_id)
    ]


# -- keys and tenants --------------------------------------------------------------------------


class FixedKeys:
    """A key store of a few fixed keys (the key protocol; the real stores are tested apart)."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self.keys = keys

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def create(
        self, tenant: str, scopes: frozenset[KeyScope], name: str = ""
    ) -> tuple[KeyInfo, str]:
        raise NotImplementedError

    async def verify(self, key: str) -> Principal | None:
        return self.keys.get(key)

    async def revoke(self, key_id: str) -> bool:
        return False

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        return []


async def test_streams_answer_only_the_key_s_tenant(runtime: Runtime) -> None:
    keys = FixedKeys(
        {
            "k-acme": Principal("a", "acme", frozenset({KeyScope.READ})),
            "k-other": Principal("o", "other", frozenset({KeyScope.READ})),
            "k-runner": Principal("r", "acme", frozenset({KeyScope.RUN})),
        }
    )
    app = create_app(runtime, graphs=[ticker], keys=keys, config=ServerConfig(console=False))
    mine = await runtime.tenant("acme").start(ticker, {"limit": 2})
    theirs = await runtime.tenant("other").start(ticker, {"limit": 2})
    await mine.wait()
    await theirs.wait()
    async with serve(app) as s, httpx.AsyncClient(timeout=30) as c:
        url = f"{s.url}/v1/runs/{{}}/stream"
        acme = {"Authorization": "Bearer k-acme"}
        got = await read_sse(c, url.format(mine.run_id), headers=acme)
        assert got.end is not None and got.end["status"] == "finished"
        assert (await c.get(url.format(theirs.run_id), headers=acme)).status_code == 404
        assert (await c.get(url.format(mine.run_id))).status_code == 401
        runner = {"Authorization": "Bearer k-runner"}
        assert (await c.get(url.format(mine.run_id), headers=runner)).status_code == 403
        ws = s.url.replace("http", "ws")
        for query, code in ((f"{theirs.run_id}/ws?api_key=k-acme", 4404),
                            (f"{mine.run_id}/ws", 4401),
                            (f"{mine.run_id}/ws?api_key=k-runner", 4403)):  # fmt: skip
            async with websockets.connect(f"{ws}/v1/runs/{query}") as conn:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code
        # The live list shows the key's tenant's runs only.
        from mainspring.models.sse import SSEParser

        async with c.stream("GET", f"{s.url}/v1/watch", headers=acme) as response:
            parser = SSEParser()
            async for chunk in response.aiter_raw():
                first = [msgspec.json.decode(e.data) for e in parser.feed(chunk)]
                if first:
                    break
        assert {r["run_id"] for r in first} == {mine.run_id}


async def test_a_key_revoked_elsewhere_ends_its_open_streams(
    runtime: Runtime, tmp_path: Path
) -> None:
    # The server's store caches a valid key briefly; the key is revoked through another
    # store object (as `mainspring keys revoke` does from another process), so only the
    # streams' own re-checks can see it.
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    served_keys, elsewhere = SQLiteKeyStore(url, cache_ttl=0.1), SQLiteKeyStore(url)
    await served_keys.open()
    await elsewhere.open()
    try:
        revoked, key = await elsewhere.create("acme", frozenset({KeyScope.READ}))
        _, kept_key = await elsewhere.create("acme", frozenset({KeyScope.READ}))
        run = await runtime.tenant("acme").start(asker, {"question": "fox?"})
        await run.wait()  # parked: its streams stay open, idle (keep-alives only)
        config = ServerConfig(console=False, heartbeat=0.05)
        app = create_app(runtime, graphs=[asker], keys=served_keys, config=config)
        async with serve(app) as s, httpx.AsyncClient(timeout=30) as c:
            auth, kept_auth = ({"Authorization": f"Bearer {k}"} for k in (key, kept_key))
            stream = f"{s.url}/v1/runs/{run.run_id}/stream?tokens=false"
            ws = f"{s.url.replace('http', 'ws')}/v1/runs/{run.run_id}/ws?tokens=false&api_key="
            run_got, watch_got, kept = Received(), Received(), Received()
            ws_frames: list[dict[str, Any]] = []
            ws_close: list[int] = []

            async def watch() -> None:
                parser = SSEParser()
                async with c.stream("GET", f"{s.url}/v1/watch", headers=auth) as response:
                    async for chunk in response.aiter_raw():
                        watch_got.events.extend(parser.feed(chunk))

            async def websocket() -> None:
                async with websockets.connect(ws + key) as conn:
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        while True:
                            ws_frames.append(msgspec.json.decode(await conn.recv()))
                assert closed.value.rcvd is not None
                ws_close.append(closed.value.rcvd.code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(read_sse, c, stream, into=run_got, headers=auth))
                tg.start_soon(partial(read_sse, c, stream, into=kept, headers=kept_auth))
                tg.start_soon(watch)
                tg.start_soon(websocket)
                await until(
                    lambda: run_got.events and watch_got.events and ws_frames and kept.events,
                    "every stream opened",
                )
                assert await elsewhere.revoke(revoked.key_id)
                await until(lambda: ws_close, "the WebSocket closed")
                await until(
                    lambda: len(watch_got.events) > 1 and run_got.events[-1].event != "interrupted",
                    "the SSE streams' last frames",
                )
                # The kept key's stream goes on: it gets the run's end.
                await runtime.tenant("acme").resume(run.run_id, True)
        for got in (run_got, watch_got):
            last = got.events[-1]
            assert last.event == "stream_error"
            assert msgspec.json.decode(last.data)["error"]["code"] == "unauthorized"
            assert got.end is None
        assert ws_close == [4401]
        assert "end" not in [f["event"] for f in ws_frames]
        assert kept.end is not None and kept.end["status"] == "finished"
    finally:
        await served_keys.aclose()
        await elsewhere.aclose()


async def test_a_cancelled_run_ends_its_streams_with_its_status(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(ticker, {"limit": 10_000, "delay": 0.01})
    got = Received()
    url = f"{served.url}/v1/runs/{run.run_id}/stream"
    async with anyio.create_task_group() as tg:

        async def follow() -> None:
            await read_sse(client, url, into=got)

        tg.start_soon(follow)
        await until(lambda: len(got.journaled) >= 3, "the stream started")
        await run.cancel()
    assert got.end is not None and got.end["status"] == "cancelled"
    assert got.journaled == await journal(runtime, run.run_id)


async def test_websocket_tokens_have_no_id_and_come_inside_their_call(
    runtime: Runtime, served: Served
) -> None:
    GATES["ws-tokens"] = gate = anyio.Event()
    run = await runtime.start(asker, {"question": "fox?", "gate": "ws-tokens"})
    ws = served.url.replace("http", "ws")
    frames: list[dict[str, Any]] = []
    async with websockets.connect(f"{ws}/v1/runs/{run.run_id}/ws?until=park") as conn:
        async for text in conn:
            frames.append(msgspec.json.decode(text))
            gate.set()  # it follows the run: let it answer
    kinds = [f["event"] for f in frames]
    tokens = [f for f in frames if f["event"] == "model_delta"]
    assert tokens and all(f["id"] is None for f in tokens)
    assert kinds.index("effect_started") < kinds.index("model_delta")
    assert kinds.index("effect_finished") > len(kinds) - kinds[::-1].index("model_delta") - 1
    assert "".join(f["data"]["data"]["text"] for f in tokens) == ANSWER
    assert frames[-1] == {"id": None, "event": "end", "data": {"status": "interrupted", "seq": 5}}


async def test_closing_the_streams_lets_a_server_stop_gracefully(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    await run.wait()  # parked: its stream would stay open
    got = Received()
    async with anyio.create_task_group() as tg:

        async def follow() -> None:
            await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream", into=got)

        tg.start_soon(follow)
        await until(lambda: "interrupted" in [e.event for e in got.events], "the stream is on")
        close_streams(served.app)
    assert got.end is None  # ended, not finished: the client would reconnect
    again = await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream?until=park")
    assert again.journaled == got.journaled  # a new hub serves new requests


async def test_a_store_failure_ends_the_stream_with_stream_error(
    runtime: Runtime, served: Served, client: httpx.AsyncClient
) -> None:
    run = await runtime.start(asker, {"question": "fox?"})
    await run.wait()  # parked: its stream reads the run's record now and then
    got = Received()
    async with anyio.create_task_group() as tg:

        async def follow() -> None:
            await read_sse(client, f"{served.url}/v1/runs/{run.run_id}/stream", into=got)

        tg.start_soon(follow)
        await until(lambda: "interrupted" in [e.event for e in got.events], "the stream is on")
        await runtime.store.aclose()  # the store goes away under the stream
    try:
        errors = [msgspec.json.decode(e.data) for e in got.events if e.event == "stream_error"]
        assert errors and errors[0]["error"]["code"] == "store_unavailable"
        assert "streams.db" not in errors[0]["error"]["message"]  # the log has the details
        assert got.end is None
    finally:
        await runtime.store.open()
