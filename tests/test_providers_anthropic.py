"""Anthropic against a real server speaking the Messages API from its published examples."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mainspring.models.errors import ContentFilteredError, OverloadedError, StreamInterruptedError
from mainspring.models.messages import (
    ImagePart,
    ModelRequest,
    OutputSpec,
    ToolCall,
    ToolSpec,
    Usage,
    assistant,
    system,
    tool_result,
    user,
)
from mainspring.models.protocol import (
    ModelProvider,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from mainspring.models.providers.anthropic import Anthropic
from tests.wire_server import Reply, WireServer, fixture, fixture_json

pytestmark = pytest.mark.anyio

KEY = "sk-ant-api03-test0123456789abcdef"
WEATHER = ToolSpec("get_weather", "Weather", {"type": "object", "properties": {}})


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


def claude(server: WireServer, **kw: object) -> Anthropic:
    return Anthropic(base_url=server.base_url, api_key=KEY, **kw)  # type: ignore[arg-type]


async def collect(provider: Anthropic, request: ModelRequest) -> list[StreamEvent]:
    return [e async for e in provider.stream(request)]


def test_is_a_model_provider() -> None:
    assert isinstance(Anthropic(base_url="http://127.0.0.1:9"), ModelProvider)


async def test_complete_sends_blocks_headers_and_system(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_message.json"))
    provider = claude(server, max_tokens=1024)
    c1, c2 = ToolCall("toolu_1", "get_weather", {"q": "SF"}), ToolCall("toolu_2", "get_weather")
    request = ModelRequest(
        "claude-sonnet-4-20250514",
        [
            system("Be brief."),
            system("Be kind."),
            user(
                "What is this?",
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ImagePart(url="data:image/jpeg;base64,/9j/4AAQ"),
                ImagePart(url="https://x/a.png"),
            ),
            assistant("Checking.", [c1, c2]),
            tool_result("toolu_1", "sunny"),
            tool_result("toolu_2", "rain"),
            user("So?"),
        ],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0.3,
        stop=["END"],
        params={"top_k": 5},
    )
    response = await provider.complete(request)
    sent = server.last()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json() == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": "Be brief.\n\nBe kind.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    },
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": "/9j/4AAQ",
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"q": "SF"},
                    },
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [  # both results and the next question: one user turn
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                    {"type": "text", "text": "So?"},
                ],
            },
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": WEATHER.parameters}
        ],
        "tool_choice": {"type": "any"},
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "top_k": 5,
    }
    assert response.text == "Hi! My name is Claude."
    assert response.id == "msg_013Zva2CMHLNnXjNJJKqJ2EF" and response.finish_reason == "stop"
    # Anthropic's input_tokens leaves out cache reads and writes: ours is the whole prompt.
    assert response.usage == Usage(2095 + 2051 + 2051, 503, cached_tokens=2051)
    await provider.aclose()


async def test_default_max_tokens_and_tool_use(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_tool_use.json"))
    provider = claude(server)
    response = await provider.complete(ModelRequest("claude", [user("weather in SF?")]))
    assert server.last().json()["max_tokens"] == 4096
    assert response.finish_reason == "tool_calls"
    assert response.text == "I'll check the current weather in San Francisco for you."
    assert response.tool_calls == [
        ToolCall(
            "toolu_01A09q90qw90lq917835lq9",
            "get_weather",
            {"location": "San Francisco, CA", "unit": "celsius"},
        )
    ]
    await provider.aclose()


async def test_structured_output_is_a_forced_tool(server: WireServer) -> None:
    answer = fixture_json("anthropic_tool_use.json")
    answer["content"][1]["name"] = "weather_report"  # the text before it is not the answer
    server.on("/v1/messages", Reply.json(answer))
    provider = claude(server)
    schema = {"type": "object", "properties": {"location": {"type": "string"}}}
    request = ModelRequest("claude", [user("report")], output=OutputSpec("weather_report", schema))
    response = await provider.complete(request)
    sent = server.last().json()
    assert sent["tool_choice"] == {"type": "tool", "name": "weather_report"}
    assert sent["tools"][-1]["input_schema"] == schema
    assert response.tool_calls == [] and response.finish_reason == "stop"
    assert response.output == {"location": "San Francisco, CA", "unit": "celsius"}
    assert response.text == '{"location":"San Francisco, CA","unit":"celsius"}'
    await provider.aclose()


async def test_stream_text(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream.sse"))
    provider = claude(server)
    events = await collect(provider, ModelRequest("claude", [user("hi")]))
    assert server.last().json()["stream"] is True
    assert events[:-1] == [TextDelta("Hello"), TextDelta("!")]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text == "Hello!" and end.response.finish_reason == "stop"
    assert end.response.usage == Usage(25, 15)
    assert end.response.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    assert end.response.ttft is not None and end.response.latency is not None
    await provider.aclose()


async def test_stream_tool_use_input_json_deltas(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream_tool_use.sse"))
    provider = claude(server)
    events = await collect(provider, ModelRequest("claude", [user("weather?")], tools=[WEATHER]))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0] == ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", "")
    assert "".join(c.arguments for c in calls) == (
        '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    )
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text == "Okay, let's check the weather for San Francisco, CA:"
    assert end.response.tool_calls == [
        ToolCall(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            {"location": "San Francisco, CA", "unit": "fahrenheit"},
        )
    ]
    assert end.response.finish_reason == "tool_calls"
    assert end.response.usage == Usage(472, 89)
    await provider.aclose()


async def test_stream_structured_output_streams_as_text(server: WireServer) -> None:
    raw = fixture("anthropic_stream_tool_use.sse").replace(b'"get_weather"', b'"report"')
    server.on("/v1/messages", Reply.sse(raw))
    provider = claude(server)
    request = ModelRequest("claude", [user("?")], output=OutputSpec("report", {"type": "object"}))
    events = await collect(provider, request)
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    )
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.output == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    await provider.aclose()


async def test_stream_thinking_blocks_are_reasoning(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream_thinking.sse"))
    provider = claude(server)
    events = await collect(provider, ModelRequest("claude", [user("What is 27 * 453?")]))
    thinking = [e for e in events if isinstance(e, ReasoningDelta)]
    assert len(thinking) == 6 and thinking[0].text.startswith("Let me solve this step by step")
    assert events[6] == TextDelta("27 * 453 = 12,231")  # the signature_delta gives nothing
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text == "27 * 453 = 12,231" and end.response.finish_reason == "stop"
    assert end.response.usage == Usage()  # the example's events carry no usage
    await provider.aclose()


async def test_stream_server_tool_use_is_not_a_tool_call(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream_web_search.sse"))
    provider = claude(server)
    events = await collect(provider, ModelRequest("claude", [user("NYC weather?")]))
    assert not any(isinstance(e, ToolCallDelta) for e in events)  # Anthropic ran it
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.tool_calls == [] and end.response.finish_reason == "stop"
    assert end.response.text == (
        "I'll check the current weather in New York City for you."
        "Here's the current weather information for New York City:\n\n# Weather"
        " in New York City\n\n"
    )
    # message_delta's usage is cumulative and now carries input_tokens too.
    assert end.response.usage == Usage(10682, 510)
    await provider.aclose()


async def test_stream_refusal_is_content_filtered(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream_refusal.sse"))
    provider = claude(server)
    with pytest.raises(ContentFilteredError, match="refused"):
        await collect(provider, ModelRequest("claude", [user("?")]))
    await provider.aclose()


async def test_stream_cut_at_max_tokens_keeps_the_partial_tool_input(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream_max_tokens.sse"))
    provider = claude(server)
    events = await collect(provider, ModelRequest("claude", [user("taxes")], tools=[WEATHER]))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.finish_reason == "length"
    [call] = end.response.tool_calls
    assert call.id == "toolu_01EKqbqmZrGRXy18eN7m9kvY" and call.name == "make_file"
    assert call.arguments["_raw"].startswith('{"filename": "taxes.txt", "lines_of_text": [')
    assert end.response.usage == Usage(450, 124)
    await provider.aclose()


async def test_stream_error_event_mid_stream_and_at_start(server: WireServer) -> None:
    raw = fixture("anthropic_stream_error.sse")
    at_start = raw[raw.index(b"event: error") :]
    server.on("/v1/messages", Reply.sse(raw), Reply.sse(at_start))
    provider = claude(server)
    with pytest.raises(StreamInterruptedError, match="Overloaded") as err:
        await collect(provider, ModelRequest("claude", [user("hi")]))
    assert err.value.partial == "Hello"
    with pytest.raises(OverloadedError, match="Overloaded"):
        await collect(provider, ModelRequest("claude", [user("hi")]))
    await provider.aclose()


async def test_stream_cut_and_missing_stop(server: WireServer) -> None:
    server.on(
        "/v1/messages",
        Reply.file("anthropic_stream.sse", drop_after=5),
        Reply.file("anthropic_stream.sse", end_after=7),
    )
    provider = claude(server)
    with pytest.raises(StreamInterruptedError, match="connection broke") as cut:
        await collect(provider, ModelRequest("claude", [user("hi")]))
    assert cut.value.partial == "Hello!"
    with pytest.raises(StreamInterruptedError, match="no message_stop"):
        await collect(provider, ModelRequest("claude", [user("hi")]))
    await provider.aclose()


async def test_connection_reuse(server: WireServer) -> None:
    server.on(
        "/v1/messages",
        lambda r: Reply.file(
            "anthropic_stream.sse" if r.json().get("stream") else "anthropic_message.json"
        ),
    )
    provider = claude(server)
    for _ in range(10):
        await provider.complete(ModelRequest("claude", [user("hi")]))
        await collect(provider, ModelRequest("claude", [user("hi")]))
    assert (len(server.requests), server.connections) == (20, 1)
    await provider.aclose()


@pytest.mark.live
async def test_live_anthropic() -> None:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        pytest.skip("set ANTHROPIC_API_KEY to call the real Messages API")
    model = os.environ.get("MAINSPRING_ANTHROPIC_MODEL", "claude-3-5-haiku-latest")
    provider = Anthropic()
    request = ModelRequest(model, [user("Answer with the single word: pong")], max_tokens=20)
    assert "pong" in (await provider.complete(request)).text.lower()
    end = [e async for e in provider.stream(request)][-1]
    assert isinstance(end, StreamEnd) and end.response.ttft is not None
    await provider.aclose()
