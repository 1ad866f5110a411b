"""An agent as an OpenAI-compatible model, driven by the real ``openai`` SDK over a real
uvicorn server: models, chat completions (JSON and streamed), threads, parked runs and
errors in OpenAI's shape. The agent's model is a scripted one behind the real gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from mainspring.server.agent_turns import usage_of
from mainspring.server.context import ServerState
from mainspring.server.keys.protocol import Scope
from tests.agent_server import ANSWER, GatedModel, MemoryKeys, build_app, forecaster_script, serve

pytestmark = pytest.mark.anyio

THREAD = "X-Mainspring-Thread"


def _client(url: str, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1/openai", api_key=key, max_retries=2)


def _user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def _state(app_state: Any) -> ServerState:
    state: ServerState = app_state.mainspring
    return state


async def test_the_served_agents_are_the_models(tmp_path: Path) -> None:
    app = build_app(tmp_path, GatedModel(forecaster_script))
    async with serve(app) as url, _client(url) as client:
        models = await client.models.list()
        one = await client.models.retrieve("forecaster")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("nobody")
    assert [m.id for m in models.data] == ["forecaster"]  # the plain graph is no model
    assert one.owned_by == "mainspring"
    assert missing.value.code == "model_not_found"


async def test_a_completion_is_the_agents_answer_with_the_runs_usage(tmp_path: Path) -> None:
    app = build_app(tmp_path, GatedModel(forecaster_script))
    async with serve(app) as url, _client(url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="forecaster", messages=_user("Weather in Paris?"), user="ana"
        )
        completion = raw.parse()
        run_id = raw.headers["X-Mainspring-Run-Id"]
        runtime = _state(app.state).runtime
        journal = await runtime.events(run_id)
        record = await runtime.get_run(run_id)
    assert completion.id == f"chatcmpl-{run_id}" and completion.model == "forecaster"
    (choice,) = completion.choices
    assert choice.message.content == ANSWER and choice.finish_reason == "stop"
    totals = usage_of(journal)  # two model calls (the tool call, then the answer)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(u["input"] for u in totals.values()) > 0
    assert completion.usage.completion_tokens == sum(u["output"] for u in totals.values()) > 0
    assert record.thread is None and record.metadata == {"openai": {"user": "ana"}}
    assert (completion.model_extra or {})["mainspring"]["status"] == "finished"


async def test_a_streamed_completion_sends_the_agents_tokens(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, _client(url) as client:
        model.close()  # the first model call waits until the stream is open
        stream = await client.chat.completions.create(
            model="forecaster",
            messages=_user("Weather in Paris?"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            model.gate.set()
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1 and "".join(texts) == ANSWER  # token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None and usage.total_tokens > 0


async def test_a_thread_header_continues_the_conversation_server_side(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, _client(url) as client:
        first = await client.chat.completions.create(
            model="forecaster", messages=_user("Weather in Paris?"), extra_headers={THREAD: "t1"}
        )
        history: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": "You are a client's system prompt."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "hi again"},
        ]
        second = await client.chat.completions.create(
            model="forecaster", messages=history, extra_headers={THREAD: "t1"}
        )
        runs = await _state(app.state).runtime.list_runs(thread="t1")
    assert second.choices[0].message.content == "Hello there, how can I help?"
    seen = model.inner.calls[-1].messages
    assert [m.text for m in seen if m.role == "user"] == ["Weather in Paris?", "hi again"]
    assert len(runs) == 2


async def test_a_parked_run_says_what_it_waits_for_and_the_thread_waits(tmp_path: Path) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, _client(url) as client:
        parked = await client.chat.completions.create(
            model="forecaster", messages=_user("book a table"), extra_headers={THREAD: "t1"}
        )
        about = (parked.model_extra or {})["mainspring"]
        run_id, iid = about["run_id"], about["interrupts"][0]["interrupt_id"]
        with pytest.raises(openai.ConflictError) as busy:
            await client.chat.completions.create(
                model="forecaster", messages=_user("hi"), extra_headers={THREAD: "t1"}
            )
        runtime = _state(app.state).runtime
        handle = await runtime.resume(run_id, True, interrupt_id=iid)
        await handle.wait()
        streamed = await client.chat.completions.create(
            model="forecaster", messages=_user("book again"), stream=True,
            extra_headers={THREAD: "t1"},
        )  # fmt: skip
        text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])
    content = parked.choices[0].message.content or ""
    assert parked.choices[0].finish_reason == "stop" and about["status"] == "interrupted"
    assert run_id in content and f"/v1/runs/{run_id}/interrupts/{iid}/approve" in content
    assert busy.value.code == "thread_busy" and run_id in busy.value.message
    assert "waiting for a person" in text  # a stream ends the same way


async def test_errors_come_in_openais_shape_and_a_failed_run_is_not_retried(
    tmp_path: Path,
) -> None:
    app = build_app(tmp_path, GatedModel(forecaster_script))
    async with serve(app) as url, _client(url) as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(model="nobody", messages=_user("hi"))
        with pytest.raises(openai.BadRequestError) as empty:
            await client.chat.completions.create(model="forecaster", messages=[])
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="forecaster", messages=_user("fail"))
        with pytest.raises(openai.APIError) as failed_stream:
            stream = await client.chat.completions.create(
                model="forecaster", messages=_user("fail"), stream=True
            )
            async for _ in stream:
                pass
        runs = await _state(app.state).runtime.list_runs(status="failed")
    body = unknown.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert (body["type"], body["param"], body["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert "forecaster" in body["message"]  # what is served
    assert empty.value.code == "invalid_request" and empty.value.param == "messages"
    assert failed.value.code == "run_failed" and "the model broke" in failed.value.message
    assert failed_stream.value.code == "run_failed"
    assert len(runs) == 2  # one run per request: the SDK did not retry the failed one


async def test_a_key_without_the_run_scope_is_refused_as_openai_would(tmp_path: Path) -> None:
    keys = MemoryKeys()
    _, reader = await keys.create("acme", frozenset({Scope.READ}))
    _, runner = await keys.create("acme", frozenset({Scope.RUN}))
    app = build_app(tmp_path, GatedModel(forecaster_script), keys)
    async with (
        serve(app) as url,
        _client(url, "ms_nope_nope") as nobody,
        _client(url, reader) as reading,
        _client(url, runner) as running,
    ):
        with pytest.raises(openai.AuthenticationError) as anonymous:
            await nobody.models.list()
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await reading.chat.completions.create(model="forecaster", messages=_user("hi"))
        answer = await running.chat.completions.create(model="forecaster", messages=_user("hi"))
        run_id = (answer.model_extra or {})["mainspring"]["run_id"]
        record = await _state(app.state).runtime.get_run(run_id)
    assert anonymous.value.body is not None and denied.value.code == "forbidden"
    assert answer.choices[0].message.content == "Hello there, how can I help?"
    assert record.tenant == "acme"


async def test_words_before_a_tool_call_stream_as_a_paragraph_of_their_own(
    tmp_path: Path,
) -> None:
    model = GatedModel(forecaster_script)
    app = build_app(tmp_path, model)
    async with serve(app) as url, _client(url) as client:
        model.close()
        stream = await client.chat.completions.create(
            model="forecaster", messages=_user("look up the weather"), stream=True
        )
        texts = []
        async for chunk in stream:
            texts += [c.delta.content or "" for c in chunk.choices]
            model.gate.set()
        answer = await client.chat.completions.create(
            model="forecaster", messages=_user("look up the weather")
        )
    assert "".join(texts) == f"Let me look.\n\n{ANSWER}"  # every turn, as the model says it
    assert answer.choices[0].message.content == ANSWER  # the final answer alone
