"""OpenAIChat against a real HTTP server speaking Chat Completions from the published examples:
the bytes we send, the responses we map, streams (text, tool calls, usage), cuts and reuse."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from mainspring.models.errors import (
    AuthenticationError,
    ContentFilteredError,
    ModelTimeoutError,
    OverloadedError,
    RateLimitedError,
    StreamInterruptedError,
)
from mainspring.models.messages import (
    ImagePart,
    Message,
    ModelRequest,
    OutputSpec,
    TextPart,
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
from mainspring.models.providers.openai_chat import OpenAIChat, chat_usage
from tests.wire_server import Reply, WireServer, fixture_json

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdefghijklmnop"
SF_ANSWER = (  # the recorded stream's answer (openai-python's snapshot e2aad469b71d)
    "I'm unable to provide real-time weather updates. To get the current weather in San "
    "Francisco, I recommend checking a reliable weather website or a weather app."
)
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a place",
    {"type": "object", "properties": {"location": {"type": "string"}}},
)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


def chat(server: WireServer, **kw: object) -> OpenAIChat:
    return OpenAIChat(base_url=f"{server.base_url}/v1", api_key=KEY, **kw)  # type: ignore[arg-type]


async def collect(provider: OpenAIChat, request: ModelRequest) -> list[StreamEvent]:
    return [e async for e in provider.stream(request)]


def test_is_a_model_provider() -> None:
    assert isinstance(OpenAIChat(base_url="http://127.0.0.1:9"), ModelProvider)


async def test_complete_sends_every_part_of_the_message_model(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_completion_cached.json"))
    provider = chat(server, organization="org-1")
    call = ToolCall("call_1", "get_weather", {"location": "Paris"})
    request = ModelRequest(
        "gpt-4.1",
        [
            system("Be brief."),
            user(
                "What is this?",
                ImagePart(url="https://example.com/a.png"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
            ),
            assistant("Let me look.", [call]),
            tool_result("call_1", {"temp": 21}),
            user("Thanks"),
        ],
        tools=[WEATHER],
        tool_choice="get_weather",
        output=OutputSpec("answer", {"type": "object"}),
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
        params={"seed": 7, "top_p": 0.5},
    )
    response = await provider.complete(request)
    sent = server.last()
    assert sent.method == "POST" and sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.json() == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21}'},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a place",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["END"],
        "seed": 7,
        "top_p": 0.5,
    }
    assert response.text == "Hello! How can I assist you today?"
    assert response.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert response.model == "gpt-5.4" and response.provider == "openai"
    assert response.finish_reason == "stop"
    assert response.usage == Usage(2006, 300, cached_tokens=1920)
    assert response.latency is not None and 0 < response.latency < 5
    assert response.output is None  # the text is not JSON: the gateway's validator says so
    await provider.aclose()


async def test_complete_maps_tool_calls_with_parsed_arguments(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_tool_calls.json"))
    provider = chat(server)
    response = await provider.complete(ModelRequest("gpt-4o-mini", [user("weather?")]))
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall("call_abc123", "get_current_weather", {"location": "Boston, MA"})
    ]
    assert response.text == ""
    await provider.aclose()


async def test_invalid_tool_arguments_are_kept_raw(server: WireServer) -> None:
    body = fixture_json("openai_chat_tool_calls.json")
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Bos'
    server.on("/v1/chat/completions", Reply.json(body))
    provider = chat(server)
    response = await provider.complete(ModelRequest("m", [user("weather?")]))
    assert response.tool_calls[0].arguments == {"_raw": '{"location": "Bos'}
    await provider.aclose()


async def test_usage_counts_reasoning_tokens(server: WireServer) -> None:
    body = fixture_json("openai_chat_completion.json")
    assert chat_usage(body["usage"]) == Usage(19, 10)  # the published example: all zeros
    body["usage"]["completion_tokens_details"]["reasoning_tokens"] = 192
    server.on("/v1/chat/completions", Reply.json(body))
    provider = chat(server)
    response = await provider.complete(ModelRequest("o3", [user("?")]))
    assert response.usage == Usage(19, 10, reasoning_tokens=192)
    await provider.aclose()


async def test_structured_output_is_parsed(server: WireServer) -> None:
    body = fixture_json("openai_chat_completion.json")
    body["choices"][0]["message"]["content"] = '{"city": "Paris"}'
    server.on("/v1/chat/completions", Reply.json(body))
    provider = chat(server)
    request = ModelRequest("m", [user("?")], output=OutputSpec("a", {"type": "object"}))
    assert (await provider.complete(request)).output == {"city": "Paris"}
    await provider.aclose()


async def test_stream_text_usage_and_timing(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream.sse", event_delay=0.01))
    provider = chat(server)
    events = await collect(provider, ModelRequest("gpt-4o-mini", [user("hi")]))
    sent = server.last().json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert server.last().headers["accept"] == "text/event-stream"
    assert events[:3] == [TextDelta("I'm"), TextDelta(" unable"), TextDelta(" to")]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    r = end.response
    assert r.text == SF_ANSWER and r.finish_reason == "stop"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == SF_ANSWER
    assert r.id == "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL" and r.model == "gpt-4o-2024-08-06"
    assert r.usage == Usage(14, 30)
    assert r.ttft is not None and r.latency is not None
    assert 0.01 < r.ttft < r.latency  # the first token came before the whole answer
    await provider.aclose()


async def test_stream_tool_call_deltas_assemble(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream_tools.sse"))
    provider = chat(server)
    events = await collect(provider, ModelRequest("gpt-4o", [user("weather?")], tools=[WEATHER]))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, "call_4XzlGBLtUe9dy3GVNV4jhq7h", "get_weather", "")
    assert "".join(d.arguments for d in deltas) == '{"city":"New York City"}'
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.finish_reason == "tool_calls" and end.response.text == ""
    assert end.response.tool_calls == [
        ToolCall("call_4XzlGBLtUe9dy3GVNV4jhq7h", "get_weather", {"city": "New York City"})
    ]
    assert end.response.usage == Usage(44, 16)
    await provider.aclose()


async def test_stream_parallel_tool_calls_assemble_by_index(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream_parallel_tools.sse"))
    provider = chat(server)
    events = await collect(provider, ModelRequest("gpt-4o", [user("weather and AAPL?")]))
    starts = [e for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert [(d.index, d.name) for d in starts] == [(0, "GetWeatherArgs"), (1, "get_stock_price")]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.tool_calls == [
        ToolCall(
            "call_JMW1whyEaYG438VE1OIflxA2",
            "GetWeatherArgs",
            {"city": "Edinburgh", "country": "GB", "units": "c"},
        ),
        ToolCall(
            "call_DNYTawLBoN8fj3KN6qU9N1Ou",
            "get_stock_price",
            {"ticker": "AAPL", "exchange": "NASDAQ"},
        ),
    ]
    assert end.response.usage == Usage(149, 60)
    await provider.aclose()


async def test_stream_refusal_is_content_filtered(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream_refusal.sse"))
    provider = chat(server)
    with pytest.raises(
        ContentFilteredError, match=r"I'm sorry, I can't assist with that request\."
    ):
        await collect(provider, ModelRequest("gpt-4o", [user("?")]))
    await provider.aclose()


async def test_stream_of_several_choices_keeps_the_first(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream_choices.sse"))
    provider = chat(server)
    request = ModelRequest("gpt-4o", [user("SF weather?")], params={"n": 3})
    events = await collect(provider, request)
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text == '{"city":"San Francisco","temperature":65,"units":"f"}'
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == end.response.text
    await provider.aclose()


async def test_stream_reasoning_content_of_compatible_servers(server: WireServer) -> None:
    chunk = '{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"%s"}}]}'
    raw = (
        f"data: {chunk % 'think'}\n\n" + 'data: {"id":"c","choices":[{"index":0,'
        '"delta":{"content":"42"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    server.on("/v1/chat/completions", Reply.sse(raw.encode()))
    provider = chat(server)
    events = await collect(provider, ModelRequest("qwen3", [user("?")]))
    assert events[:2] == [ReasoningDelta("think"), TextDelta("42")]
    assert isinstance(events[-1], StreamEnd) and events[-1].response.text == "42"
    await provider.aclose()


async def test_stream_cut_mid_way_raises_interrupted_with_partial(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream.sse", drop_after=3))
    provider = chat(server)
    seen: list[StreamEvent] = []
    with pytest.raises(StreamInterruptedError) as err:
        async for event in provider.stream(ModelRequest("m", [user("hi")])):
            seen.append(event)
    assert seen == [TextDelta("I'm"), TextDelta(" unable")]
    assert err.value.partial == "I'm unable" and err.value.retryable
    assert "connection broke" in str(err.value)
    await provider.aclose()


async def test_stream_without_done_is_interrupted(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_stream.sse", end_after=4))
    provider = chat(server)
    with pytest.raises(StreamInterruptedError, match=r"no \[DONE\]") as err:
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert err.value.partial == "I'm unable to"
    await provider.aclose()


async def test_stream_error_before_first_byte_is_the_mapped_error(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.error("openai_errors.json", "rate_limited"))
    provider = chat(server)
    with pytest.raises(RateLimitedError) as err:
        await collect(provider, ModelRequest("gpt-4o", [user("hi")]))
    assert err.value.retry_after == 2.0 and err.value.status == 429
    await provider.aclose()


async def test_error_event_mid_stream(server: WireServer) -> None:
    raw = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
        b'data: {"error":{"message":"upstream died","type":"server_error"}}\n\n'
    )
    server.on("/v1/chat/completions", Reply.sse(raw), Reply.sse(raw.split(b"\n\n", 1)[1]))
    provider = chat(server)
    with pytest.raises(StreamInterruptedError, match="upstream died") as err:
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert err.value.partial == "Hel"
    with pytest.raises(OverloadedError, match="upstream died"):  # before any delta: mapped
        await collect(provider, ModelRequest("m", [user("hi")]))
    await provider.aclose()


async def test_twenty_calls_reuse_one_connection(server: WireServer) -> None:
    server.on(
        "/v1/chat/completions",
        lambda r: Reply.file(
            "openai_chat_stream.sse" if r.json().get("stream") else "openai_chat_completion.json"
        ),
    )
    provider = chat(server)
    for _ in range(10):
        await provider.complete(ModelRequest("m", [user("hi")]))
        await collect(provider, ModelRequest("m", [user("hi")]))
    assert len(server.requests) == 20
    assert server.connections == 1
    await provider.aclose()


async def test_timeout_and_refused_connection_map_to_retryable_errors(server: WireServer) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_completion.json", delay=0.5))
    provider = chat(server, timeout=0.1)
    with pytest.raises(ModelTimeoutError) as timeout:
        await provider.complete(ModelRequest("m", [user("hi")]))
    assert timeout.value.retryable and isinstance(timeout.value, TimeoutError)
    await provider.aclose()
    refused = OpenAIChat(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(OverloadedError, match="could not connect"):
        await refused.complete(ModelRequest("m", [user("hi")]))
    await refused.aclose()


async def test_refusal_is_content_filtered(server: WireServer) -> None:
    body = fixture_json("openai_chat_completion.json")
    body["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    server.on("/v1/chat/completions", Reply.json(body))
    provider = chat(server)
    with pytest.raises(ContentFilteredError, match="I can't help with that"):
        await provider.complete(ModelRequest("m", [user("?")]))
    await provider.aclose()


async def test_keys_from_env_and_secrets_never_shown(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.on("/v1/chat/completions", Reply.file("openai_chat_completion.json"))
    monkeypatch.setenv("MY_KEY", "sk-from-env-aaaaaaaaaaaaaaaa")
    from_env = OpenAIChat(base_url=f"{server.base_url}/v1", api_key_env="MY_KEY")
    await from_env.complete(ModelRequest("m", [user("hi")]))
    assert server.last().headers["authorization"] == "Bearer sk-from-env-aaaaaaaaaaaaaaaa"
    asked: list[str] = []

    def vault(name: str) -> str | None:
        asked.append(name)
        return "sk-from-vault-bbbbbbbbbbbbbbbb"

    from_vault = OpenAIChat(base_url=f"{server.base_url}/v1", secrets=vault)
    await from_vault.complete(ModelRequest("m", [user("hi")]))
    assert asked == ["OPENAI_API_KEY"]
    assert server.last().headers["authorization"] == "Bearer sk-from-vault-bbbbbbbbbbbbbbbb"
    for p in (from_env, from_vault, chat(server)):
        shown = repr(p) + repr(p._http) + str(vars(p))
        assert "sk-" not in shown
        await p.aclose()


async def test_official_endpoint_without_key_fails_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = OpenAIChat(secrets=lambda name: None)
    assert provider.max_tokens_field == "max_completion_tokens"
    with pytest.raises(AuthenticationError, match="set OPENAI_API_KEY"):
        await provider.complete(ModelRequest("gpt-4.1", [user("hi")]))
    await provider.aclose()


async def test_local_server_needs_no_key(
    server: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.on("/v1/chat/completions", Reply.file("openai_chat_completion.json"))
    provider = OpenAIChat(base_url=f"{server.base_url}/v1")
    await provider.complete(ModelRequest("llama3", [Message("user", [TextPart("hi")])]))
    assert "authorization" not in server.last().headers
    assert server.last().json()["messages"] == [{"role": "user", "content": "hi"}]
    await provider.aclose()


@pytest.mark.live
async def test_live_openai_compatible_endpoint() -> None:
    base_url = os.environ.get("MAINSPRING_OPENAI_BASE_URL")
    if not (base_url or os.environ.get("OPENAI_API_KEY")):
        pytest.skip("set OPENAI_API_KEY or MAINSPRING_OPENAI_BASE_URL to call a real endpoint")
    model = os.environ.get("MAINSPRING_OPENAI_MODEL", "gpt-4.1-mini")
    provider = OpenAIChat(base_url=base_url)
    request = ModelRequest(model, [user("Answer with the single word: pong")], max_tokens=20)
    response = await provider.complete(request)
    assert "pong" in response.text.lower() and response.usage.input_tokens > 0
    events = [e async for e in provider.stream(request)]
    end = events[-1]
    assert isinstance(end, StreamEnd) and "pong" in end.response.text.lower()
    assert end.response.ttft is not None
    await provider.aclose()


def test_http2_offered_when_h2_is_installed() -> None:
    client = OpenAIChat(base_url="http://127.0.0.1:9")._http.client
    pool = client._transport._pool  # type: ignore[attr-defined]  # httpx's connection pool
    assert pool._http2 is (importlib.util.find_spec("h2") is not None)
    assert pool._http1 is True  # HTTP/1.1 stays available for servers without ALPN h2
