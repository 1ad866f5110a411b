"""POST /v1/agui/{name}: an agent driven by the AG-UI protocol, over a real uvicorn server.

The requests are built and the streamed events parsed back with the ``ag-ui-protocol``
package's own models (every event is validated as an ``ag_ui.core.Event``); the agent's
model is a scripted one behind the real gateway, streaming its tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    Context,
    Event,
    EventType,
    ResumeEntry,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from pydantic import TypeAdapter

from mainspring import RunStatus
from mainspring.events import Resumed
from mainspring.server.context import ServerState
from mainspring.server.keys.protocol import Scope
from tests.agent_server import ANSWER, GatedModel, MemoryKeys, build_app, forecaster_script, serve

pytestmark = pytest.mark.anyio

EVENT: TypeAdapter[Any] = TypeAdapter(Event)


def _input(thread: str, run: str, *said: str, **extra: Any) -> dict[str, Any]:
    messages = [UserMessage(id=f"u{i}", content=text) for i, text in enumerate(said)]
    body = RunAgentInput(thread_id=thread, run_id=run, messages=list(messages), **extra)
    data: dict[str, Any] = body.model_dump(mode="json", by_alias=True)
    return data


async def _run(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    model: GatedModel | None = None,
    agent: str = "forecaster",
) -> list[BaseEvent]:
    """POST the input and read its stream to the end, each event validated; with ``model``,
    its gate opens once RUN_STARTED has arrived (so every token reaches the stream)."""
    events: list[BaseEvent] = []
    async with client.stream("POST", f"/v1/agui/{agent}", json=body) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                assert line == "", line
                continue
            events.append(EVENT.validate_json(line[len("data: ") :]))
            if model is not None and len(events) == 1:
                model.gate.set()
    _check_well_formed(events)
    return events


def _check_well_formed(events: list[BaseEvent]) -> None:
    """What AG-UI clients verify: one run, opened first and closed last; messages, tool
    calls and steps started before their content and ended once."""
    assert events[0].type is EventType.RUN_STARTED
    assert events[-1].type in (EventType.RUN_FINISHED, EventType.RUN_ERROR)
    assert sum(e.type in (EventType.RUN_FINISHED, EventType.RUN_ERROR) for e in events) == 1
    open_texts: set[str] = set()
    open_calls: set[str] = set()
    open_steps: set[str] = set()
    for e in events:
        data = e.model_dump()
        match e.type:
            case EventType.TEXT_MESSAGE_START:
                assert data["message_id"] not in open_texts
                open_texts.add(data["message_id"])
            case EventType.TEXT_MESSAGE_CONTENT:
                assert data["message_id"] in open_texts and data["delta"]
            case EventType.TEXT_MESSAGE_END:
                open_texts.remove(data["message_id"])
            case EventType.TOOL_CALL_START:
                open_calls.add(data["tool_call_id"])
            case EventType.TOOL_CALL_ARGS:
                assert data["tool_call_id"] in open_calls
            case EventType.TOOL_CALL_END:
                open_calls.remove(data["tool_call_id"])
            case EventType.STEP_STARTED:
                assert data["step_name"] not in open_steps
                open_steps.add(data["step_name"])
            case EventType.STEP_FINISHED:
                open_steps.remove(data["step_name"])
    assert not open_texts and not open_calls and not open_steps


def _text(events: list[BaseEvent]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextMessageContentEvent))


def _state(app_state: Any) -> ServerState:
    state: ServerState = app_state.mainspring
    return state


async def test_a_run_streams_its_tokens_tool_calls_and_steps(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        model.close()  # the first model call waits until the stream is open
        events = await _run(client, _input("t1", "r1", "Weather in Paris?"), model)
        record = await _state(app.state).runtime.get_run("agui-r1")  # an ordinary run
    types = [e.type for e in events]
    assert types[0] is EventType.RUN_STARTED and events[0].model_dump()["run_id"] == "r1"
    start = next(e for e in events if isinstance(e, ToolCallStartEvent))
    assert (start.tool_call_id, start.tool_call_name) == ("c0", "weather")
    args = [e.delta for e in events if isinstance(e, ToolCallArgsEvent)]
    assert len(args) == 2 and json.loads("".join(args)) == {"city": "Paris"}  # as streamed
    result = next(e for e in events if isinstance(e, ToolCallResultEvent))
    assert (result.tool_call_id, result.content) == ("c0", "sunny in Paris")
    contents = [e for e in events if isinstance(e, TextMessageContentEvent)]
    assert len(contents) > 1 and _text(events) == ANSWER  # token by token
    steps = [e.model_dump()["step_name"] for e in events if e.type is EventType.STEP_STARTED]
    assert steps == ["model", "tools", "model"]
    assert all(e.timestamp for e in events if e.type is EventType.STEP_STARTED)  # ms, journal's
    assert types.index(EventType.TOOL_CALL_RESULT) < types.index(EventType.TEXT_MESSAGE_START)
    snapshot = next(e for e in events if isinstance(e, StateSnapshotEvent))
    assert snapshot.snapshot["turns"] == 2 and "messages" not in snapshot.snapshot
    finished = events[-1]
    assert isinstance(finished, RunFinishedEvent)
    assert isinstance(finished.outcome, RunFinishedSuccessOutcome)
    assert finished.usage is not None and finished.usage[0].model == "fast"
    assert finished.usage[0].input_tokens and finished.usage[0].output_tokens
    assert record.thread == "t1" and record.metadata is not None
    assert record.metadata["agui"] == {"thread_id": "t1", "run_id": "r1"}


async def test_a_thread_goes_on_with_only_the_clients_new_turn(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await _run(client, _input("t1", "r1", "Weather in Paris?"))
        body = RunAgentInput(
            thread_id="t1",
            run_id="r2",
            messages=[
                UserMessage(id="u0", content="Weather in Paris?"),
                AssistantMessage(id="a0", content=ANSWER),
                UserMessage(id="u1", content="hi again"),
            ],
            context=[Context(description="the user's city", value="Paris")],
        ).model_dump(mode="json", by_alias=True)
        events = await _run(client, body)
    assert _text(events) == "Hello there, how can I help?"
    seen = model.inner.calls[-1].messages
    assert [m.text for m in seen if m.role == "user"] == ["Weather in Paris?", "hi again"]
    assert "the user's city: Paris" in seen[-2].text and seen[-2].role == "system"


async def test_the_same_run_id_again_streams_that_run_and_runs_nothing(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    body = _input("t1", "r1", "Weather in Paris?")
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = await _run(client, body)
        calls = len(model.inner.calls)
        again = await _run(client, body)
    assert len(model.inner.calls) == calls  # nothing ran twice
    assert _text(again) == _text(first) == ANSWER  # the answer whole, from the journal
    assert [e.type for e in again if e.type.name.startswith("TOOL_CALL")] == [
        e.type for e in first if e.type.name.startswith("TOOL_CALL")
    ]
    assert isinstance(again[-1], RunFinishedEvent)


async def test_a_client_that_hangs_up_leaves_the_run_going_and_may_ask_again(
    tmp_path: Path,
) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    body = _input("t1", "r1", "Weather in Paris?")
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        model.close()
        async with client.stream("POST", "/v1/agui/forecaster", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break  # RUN_STARTED: hang up before the model has said a word
        model.gate.set()
        outcome = await _state(app.state).runtime.handle("agui-r1").wait()
        assert outcome.status is RunStatus.FINISHED  # the run went on without its client
        again = await _run(client, body)  # the same input: the whole run, from the journal
    assert _text(again) == ANSWER and isinstance(again[-1], RunFinishedEvent)


async def test_an_approval_ends_the_run_with_an_interrupt_and_resume_answers_it(
    tmp_path: Path,
) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        parked = await _run(client, _input("t1", "r1", "book a table"))
        done = parked[-1]
        assert isinstance(done, RunFinishedEvent)
        assert isinstance(done.outcome, RunFinishedInterruptOutcome)
        (asked,) = done.outcome.interrupts
        assert asked.reason == "tool_approval" and asked.tool_call_id == "b0"
        assert asked.message and "book_table" in asked.message
        assert asked.response_schema is not None
        assert not any(isinstance(e, ToolCallResultEvent) for e in parked)  # not called yet

        resume = [ResumeEntry(interrupt_id=asked.id, status="resolved")]
        events = await _run(client, _input("t1", "r2", resume=resume))
    assert events[0].model_dump()["run_id"] == "r2"
    result = next(e for e in events if isinstance(e, ToolCallResultEvent))
    assert (result.tool_call_id, result.content) == ("b0", "booked at Chez Paul")
    assert _text(events) == "It is booked at Chez Paul today."
    finished = events[-1]
    assert isinstance(finished, RunFinishedEvent)
    assert isinstance(finished.outcome, RunFinishedSuccessOutcome)
    assert finished.usage is not None and finished.usage[0].input_tokens  # this part's calls


async def test_a_cancelled_interrupt_refuses_the_call_and_the_model_is_told(
    tmp_path: Path,
) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        parked = await _run(client, _input("t1", "r1", "book a table"))
        done = parked[-1]
        assert isinstance(done, RunFinishedEvent)
        assert isinstance(done.outcome, RunFinishedInterruptOutcome)
        iid = done.outcome.interrupts[0].id
        # a client before AG-UI 1.0's resume entries: forwardedProps carries them
        legacy = {"resume": [{"interruptId": iid, "status": "cancelled"}]}
        events = await _run(client, _input("t1", "r2", forwarded_props=legacy))
    result = next(e for e in events if isinstance(e, ToolCallResultEvent))
    assert "was not made" in str(result.content) and "cancelled" in str(result.content)
    assert "booked" not in _text(events)


async def test_a_failed_run_ends_its_stream_with_run_error(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        events = await _run(client, _input("t1", "r1", "fail please"))
    error = events[-1]
    assert isinstance(error, RunErrorEvent)
    assert "the model broke" in error.message and error.code == "ValueError"


async def test_what_is_wrong_before_the_stream_opens_is_an_http_error(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def post(body: dict[str, Any], agent: str = "forecaster") -> tuple[int, str]:
            response = await client.post(f"/v1/agui/{agent}", json=body)
            return response.status_code, response.json()["error"]["code"]

        assert await post(_input("t1", "r0", "hi"), "nobody") == (404, "graph_not_found")
        assert await post(_input("t1", "r0", "hi"), "agent:helper") == (422, "not_an_agent")
        resume = [ResumeEntry(interrupt_id="1.0.0", status="resolved")]
        assert await post(_input("t1", "r0", resume=resume)) == (409, "nothing_to_resume")
        assert await post({"threadId": "t1"}) == (422, "invalid_request")
        await _run(client, _input("t1", "r1", "book a table"))  # parks the thread's run
        assert await post(_input("t1", "r2", "hi")) == (409, "thread_busy")
        assert await post(_input("t2", "r1", "hi")) == (409, "run_exists")  # runId reused
        wrong = [ResumeEntry(interrupt_id="9.9.9", status="resolved")]
        assert await post(_input("t1", "r3", resume=wrong)) == (409, "run_state")


async def test_the_endpoint_needs_a_key_with_the_run_scope_and_acts_as_its_tenant(
    tmp_path: Path,
) -> None:
    keys = MemoryKeys()
    _, reader = await keys.create("acme", frozenset({Scope.READ}))
    _, runner = await keys.create("acme", frozenset({Scope.RUN}))
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model, keys)
    body = _input("t1", "r1", "hi")
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        anonymous = await client.post("/v1/agui/forecaster", json=body)
        assert anonymous.status_code == 401
        denied = await client.post(
            "/v1/agui/forecaster", json=body, headers={"Authorization": f"Bearer {reader}"}
        )
        assert denied.status_code == 403 and "run" in denied.json()["error"]["message"]
        client.headers["Authorization"] = f"Bearer {runner}"
        events = await _run(client, body)
        assert _text(events) == "Hello there, how can I help?"
        parked = (await _run(client, _input("t2", "r2", "book a table")))[-1]
        assert isinstance(parked, RunFinishedEvent)
        assert isinstance(parked.outcome, RunFinishedInterruptOutcome)
        resume = [ResumeEntry(interrupt_id=parked.outcome.interrupts[0].id, status="resolved")]
        resumed = await _run(client, _input("t2", "r3", resume=resume))  # as the tenant
        runtime = _state(app.state).runtime
        record = await runtime.get_run("agui-r1")
        answered = await runtime.events("agui-r2")
    assert record.tenant == "acme"
    assert _text(resumed) == "It is booked at Chez Paul today."
    approver = [e.data.actor for e in answered if isinstance(e.data, Resumed)]
    assert approver == [runner.split("_")[1]]  # the key that answered, in the journal


async def test_the_docs_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/server-agui-openai.md: its server block serves, its client block prints what the
    page says (the client's blocking calls in a worker thread)."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "server-agui-openai.md").read_text()
    server, client = re.findall(r"```python\n(.*?)```", page, re.S)[:2]
    shown = re.search(r"\nprints\n\n```\n(.*?)```", page, re.S)
    assert shown is not None
    monkeypatch.chdir(tmp_path)
    served: dict[str, Any] = {"__name__": "docs_server"}
    exec(compile(server, "docs/server-agui-openai.md (server)", "exec"), served)
    async with serve(served["app"]) as url:
        code = compile(client.replace("http://127.0.0.1:8000", url), "docs (client)", "exec")
        await anyio.to_thread.run_sync(exec, code, {"__name__": "docs_client"})
    assert capsys.readouterr().out == shown.group(1)


async def test_each_model_turn_is_a_message_and_its_tool_calls_hang_off_it(
    tmp_path: Path,
) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        model.close()
        events = await _run(client, _input("t1", "r1", "look up the weather"), model)
    starts = [e for e in events if isinstance(e, TextMessageStartEvent)]
    assert len(starts) == 2
    said = {
        s.message_id: "".join(
            e.delta
            for e in events
            if isinstance(e, TextMessageContentEvent) and e.message_id == s.message_id
        )
        for s in starts
    }
    assert list(said.values()) == ["Let me look.", ANSWER]
    call = next(e for e in events if isinstance(e, ToolCallStartEvent))
    assert call.parent_message_id == starts[0].message_id
