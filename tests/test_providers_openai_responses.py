"""OpenAIResponses against a real server speaking the Responses API from its published examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mainspring.models.errors import (
    BadRequestError,
    ContentFilteredError,
    OverloadedError,
    StreamInterruptedError,
)
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
from mainspring.models.providers.openai_responses import OpenAIResponses
from tests.wire_server import Reply, WireServer, fixture, fixture_json

pytestmark = pytest.mark.anyio

KEY = "sk-test-responses-0123456789abcdef"
WEATHER = ToolSpec("get_weather", "Weather", {"type": "object", "properties": {}})


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


def responses(server: WireServer) -> OpenAIResponses:
    return OpenAIResponses(base_url=f"{server.base_url}/v1", api_key=KEY)


async def collect(provider: OpenAIResponses, request: ModelRequest) -> list[StreamEvent]:
    return [e async for e in provider.stream(request)]


def test_is_a_model_provider() -> None:
    assert isinstance(OpenAIResponses(base_url="http://127.0.0.1:9"), ModelProvider)


async def test_complete_sends_input_items_and_maps_usage(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_response.json"))
    provider = responses(server)
    call = ToolCall("call_1", "get_weather", {"q": "Paris"})
    request = ModelRequest(
        "gpt-4.1",
        [
            system("Be brief."),
            user("Look", ImagePart(url="https://x/a.png")),
            assistant("Checking.", [call]),
            tool_result("call_1", "sunny"),
            user("Story?"),
        ],
        tools=[WEATHER],
        tool_choice="get_weather",
        output=OutputSpec("story", {"type": "object"}, strict=False),
        temperature=0.5,
        max_tokens=300,
        params={"store": False},
    )
    response = await provider.complete(request)
    sent = server.last()
    assert sent.path == "/v1/responses" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "model": "gpt-4.1",
        "input": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look"},
                    {"type": "input_image", "image_url": "https://x/a.png"},
                ],
            },
            {"role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"q":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "user", "content": "Story?"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": WEATHER.parameters,
                "strict": False,
            }
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "story",
                "schema": {"type": "object"},
                "strict": False,
            }
        },
        "temperature": 0.5,
        "max_output_tokens": 300,
        "store": False,
    }
    assert response.text.startswith("In a peaceful grove beneath a silver moon")
    assert response.id == "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
    assert response.usage == Usage(36, 87)
    assert response.finish_reason == "stop" and response.latency is not None
    await provider.aclose()


async def test_usage_counts_cached_and_reasoning_tokens(server: WireServer) -> None:
    cached = fixture_json("responses_response.json")
    cached["usage"]["input_tokens_details"]["cached_tokens"] = 12  # the example shows 0
    server.on("/v1/responses", Reply.file("responses_reasoning.json"), Reply.json(cached))
    provider = responses(server)
    reasoned = await provider.complete(ModelRequest("o1", [user("tongue twister")]))
    assert reasoned.usage == Usage(81, 1035, reasoning_tokens=832)
    assert reasoned.text == "The classic tongue twister..." and reasoned.model == "o1-2024-12-17"
    assert (await provider.complete(ModelRequest("m", [user("?")]))).usage == Usage(
        36, 87, cached_tokens=12
    )
    await provider.aclose()


async def test_complete_maps_function_calls(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_function_call.json"))
    provider = responses(server)
    response = await provider.complete(ModelRequest("gpt-4.1", [user("weather?")]))
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall(
            "call_unLAR8MvFNptuiZK6K6HCy5k",
            "get_current_weather",
            {"location": "Boston, MA", "unit": "celsius"},
        )
    ]
    await provider.aclose()


async def test_incomplete_and_refusal(server: WireServer) -> None:
    cut = fixture_json("responses_response.json")
    cut.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    refused = fixture_json("responses_response.json")
    refused["output"][0]["content"] = [{"type": "refusal", "refusal": "I can't assist."}]
    server.on("/v1/responses", Reply.json(cut), Reply.json(refused))
    provider = responses(server)
    assert (await provider.complete(ModelRequest("m", [user("?")]))).finish_reason == "length"
    with pytest.raises(ContentFilteredError, match="I can't assist"):
        await provider.complete(ModelRequest("m", [user("?")]))
    await provider.aclose()


async def test_stop_sequences_are_refused_before_sending(server: WireServer) -> None:
    provider = responses(server)
    with pytest.raises(BadRequestError, match="no stop sequences"):
        await provider.complete(ModelRequest("m", [user("?")], stop=["END"]))
    assert server.requests == []
    await provider.aclose()


async def test_stream_text(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_stream.sse"))
    provider = responses(server)
    events = await collect(provider, ModelRequest("gpt-4.1", [user("hi")]))
    assert server.last().json()["stream"] is True
    assert events[:-1] == [
        TextDelta("Hi"),
        TextDelta(" there!"),
        TextDelta(" How can I assist you today?"),
    ]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text == "Hi there! How can I assist you today?"
    assert end.response.usage == Usage(37, 11)
    assert end.response.ttft is not None and end.response.latency is not None
    await provider.aclose()


async def test_stream_function_call(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_stream_function_call.sse"))
    provider = responses(server)
    events = await collect(provider, ModelRequest("gpt-4.1", [user("weather?")], tools=[WEATHER]))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, "call_1234xyz", "get_weather", "")
    assert "".join(d.arguments for d in deltas) == '{"location":"Paris, France"}'
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.finish_reason == "tool_calls"
    assert end.response.tool_calls == [
        ToolCall("call_1234xyz", "get_weather", {"location": "Paris, France"})
    ]
    await provider.aclose()


async def test_stream_error_event_and_missing_completion(server: WireServer) -> None:
    server.on(
        "/v1/responses",
        Reply.file("responses_stream_error.sse"),
        Reply.file("responses_stream.sse", end_after=6),
    )
    provider = responses(server)
    with pytest.raises(StreamInterruptedError, match="Something went wrong") as err:
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert err.value.partial == "In"
    with pytest.raises(StreamInterruptedError, match=r"no response\.completed") as cut:
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert cut.value.partial == "Hi there!"
    await provider.aclose()


async def test_stream_failed_is_the_mapped_error(server: WireServer) -> None:
    raw = fixture("responses_stream_failed.sse")
    delta = fixture("responses_stream_error.sse").split(b"\n\n")[1] + b"\n\n"
    first, failed = raw.split(b"\n\n", 1)
    server.on("/v1/responses", Reply.sse(raw), Reply.sse(first + b"\n\n" + delta + failed))
    provider = responses(server)
    with pytest.raises(OverloadedError, match="The model failed to generate a response"):
        await collect(provider, ModelRequest("m", [user("hi")]))
    with pytest.raises(StreamInterruptedError, match="server_error") as cut:
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert cut.value.partial == "In"
    await provider.aclose()


async def test_stream_incomplete_ends_with_length(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_stream_incomplete.sse"))
    provider = responses(server)
    events = await collect(provider, ModelRequest("m", [user("hi")], max_tokens=1))
    assert events[0] == TextDelta("In")
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.response.finish_reason == "length"
    assert end.response.id == "resp_123"
    assert end.response.text == "In"  # the final response has no output: what streamed
    await provider.aclose()


async def test_stream_reasoning_summary_then_the_final_response(server: WireServer) -> None:
    server.on("/v1/responses", Reply.file("responses_stream_reasoning.sse"))
    provider = responses(server)
    events = await collect(provider, ModelRequest("o4-mini", [user("Hello!")]))
    assert isinstance(events[0], ReasoningDelta)
    assert events[0].text.startswith("**Responding to a greeting**")
    assert events[1] == TextDelta("In")
    end = events[-1]
    assert isinstance(end, StreamEnd)  # the completed response is the answer, whole
    assert end.response.text.startswith("In a shimmering forest under a sky full of stars")
    await provider.aclose()
