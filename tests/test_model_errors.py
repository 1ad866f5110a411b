"""Provider failures mapped to the models.errors tree: every published error body of each
provider through a real server, retry-after in all its forms, and keys never shown."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

import pytest

from mainspring.models._wire_errors import (
    duration_seconds,
    error_from_response,
    mask_secrets,
    retry_after,
)
from mainspring.models.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    ContextTooLongError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
)
from mainspring.models.messages import ModelRequest, user
from mainspring.models.providers.anthropic import Anthropic
from mainspring.models.providers.openai_chat import OpenAIChat
from mainspring.models.providers.openai_responses import OpenAIResponses
from tests.wire_server import Reply, WireServer, fixture_json

pytestmark = pytest.mark.anyio

OPENAI_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
ANTHROPIC_KEY = "sk-ant-api03-secretsecretsecret"

OPENAI_CASES: dict[str, type[ModelError]] = {
    "rate_limited": RateLimitedError,
    "insufficient_quota": RateLimitedError,
    "context_length": ContextTooLongError,
    "context_length_compatible": ContextTooLongError,
    "request_too_large_for_tpm": RateLimitedError,
    "invalid_api_key": AuthenticationError,
    "model_not_found": BadRequestError,
    "bad_parameter": BadRequestError,
    "content_filter": ContentFilteredError,
    "server_error": OverloadedError,
    "overloaded": OverloadedError,
}
ANTHROPIC_CASES: dict[str, type[ModelError]] = {
    "overloaded": OverloadedError,
    "rate_limited": RateLimitedError,
    "prompt_too_long": ContextTooLongError,
    "authentication": AuthenticationError,
    "permission": AuthenticationError,
    "not_found": BadRequestError,
    "request_too_large": ContextTooLongError,
    "api_error": OverloadedError,
}


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


def test_every_fixture_case_is_covered() -> None:
    assert set(fixture_json("openai_errors.json")) == set(OPENAI_CASES)
    assert set(fixture_json("anthropic_errors.json")) == set(ANTHROPIC_CASES)


def _check(err: ModelError, case: dict[str, object], key: str) -> None:
    """The message quotes the provider, says what to do, and never holds the key."""
    body = case["body"]
    assert isinstance(body, dict)
    quoted = body["error"]["message"]
    assert quoted[:20] in str(err) and err.status == case["status"]
    assert ";" in str(err)  # followed by what to do
    for text in (str(err), err.body, repr(err.args)):
        assert key not in text and "abcdefghijklmnop" not in text
    # Rebuildable from its message alone (a resumed run raises the same type).
    assert type(err)(str(err)).args == (str(err),)


@pytest.mark.parametrize("case", sorted(OPENAI_CASES))
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_openai_errors(server: WireServer, case: str, api: str) -> None:
    spec = fixture_json("openai_errors.json")[case]
    server.on(
        f"/v1/{'chat/completions' if api == 'chat' else 'responses'}",
        Reply.error("openai_errors.json", case),
    )
    cls = OpenAIChat if api == "chat" else OpenAIResponses
    provider = cls(base_url=f"{server.base_url}/v1", api_key=OPENAI_KEY)
    request = ModelRequest("gpt-4.1", [user("hi")])
    with pytest.raises(OPENAI_CASES[case]) as err:
        await provider.complete(request)
    _check(err.value, spec, OPENAI_KEY)
    with pytest.raises(OPENAI_CASES[case]):  # streaming: the same error before the first byte
        async for _ in provider.stream(request):
            pass
    await provider.aclose()


@pytest.mark.parametrize("case", sorted(ANTHROPIC_CASES))
async def test_anthropic_errors(server: WireServer, case: str) -> None:
    spec = fixture_json("anthropic_errors.json")[case]
    server.on("/v1/messages", Reply.error("anthropic_errors.json", case))
    provider = Anthropic(base_url=server.base_url, api_key=ANTHROPIC_KEY)
    with pytest.raises(ANTHROPIC_CASES[case]) as err:
        await provider.complete(ModelRequest("claude", [user("hi")]))
    _check(err.value, spec, ANTHROPIC_KEY)
    await provider.aclose()


async def test_rate_limit_details(server: WireServer) -> None:
    server.on(
        "/v1/chat/completions",
        Reply.error("openai_errors.json", "rate_limited"),
        Reply.error("openai_errors.json", "insufficient_quota"),
    )
    provider = OpenAIChat(base_url=f"{server.base_url}/v1", api_key=OPENAI_KEY)
    with pytest.raises(RateLimitedError) as limited:
        await provider.complete(ModelRequest("m", [user("hi")]))
    assert limited.value.retry_after == 2.0 and limited.value.retryable
    assert "Limit 30000" in str(limited.value) and "wait retry_after" in str(limited.value)
    with pytest.raises(RateLimitedError) as quota:
        await provider.complete(ModelRequest("m", [user("hi")]))
    assert quota.value.retry_after is None
    assert not quota.value.retryable and quota.value.fallback  # waiting will not help
    await provider.aclose()


async def test_a_request_larger_than_the_rate_limit_is_not_retried(server: WireServer) -> None:
    server.on(
        "/v1/chat/completions", Reply.error("openai_errors.json", "request_too_large_for_tpm")
    )
    provider = OpenAIChat(base_url=f"{server.base_url}/v1", api_key=OPENAI_KEY)
    with pytest.raises(RateLimitedError, match="Request too large") as err:
        await provider.complete(ModelRequest("gpt-4o", [user("hi")]))
    assert not err.value.retryable and err.value.fallback  # only a smaller request fits
    assert "shorten the prompt" in str(err.value)
    await provider.aclose()


async def test_our_key_echoed_in_an_error_body_is_masked(server: WireServer) -> None:
    key = "not-shaped-like-a-key-0123456789"
    server.on("/v1/chat/completions", Reply.json({"error": {"message": f"bad key {key}"}}, 401))
    provider = OpenAIChat(base_url=f"{server.base_url}/v1", api_key=key)
    with pytest.raises(AuthenticationError) as err:
        await provider.complete(ModelRequest("m", [user("hi")]))
    assert key not in str(err.value) and key not in err.value.body
    assert "bad key ***" in str(err.value)
    await provider.aclose()


async def test_a_rejected_key_is_looked_up_again(server: WireServer) -> None:
    keys = iter(["sk-old-rotatedrotated", "sk-new-freshfreshfresh"])
    server.on(
        "/v1/chat/completions",
        Reply.error("openai_errors.json", "invalid_api_key"),
        Reply.file("openai_chat_completion.json"),
    )
    provider = OpenAIChat(base_url=f"{server.base_url}/v1", secrets=lambda name: next(keys))
    with pytest.raises(AuthenticationError):
        await provider.complete(ModelRequest("m", [user("hi")]))
    await provider.complete(ModelRequest("m", [user("hi")]))
    assert server.last().headers["authorization"] == "Bearer sk-new-freshfreshfresh"
    await provider.aclose()


async def test_unreadable_and_unexpected_answers(server: WireServer) -> None:
    server.on(
        "/v1/chat/completions",
        Reply(200, b"<html>login</html>"),
        Reply(418, b"I'm a teapot"),
        Reply(408, b""),
    )
    provider = OpenAIChat(base_url=f"{server.base_url}/v1")
    with pytest.raises(OverloadedError, match=r"not JSON.*base_url"):
        await provider.complete(ModelRequest("m", [user("hi")]))
    with pytest.raises(ProviderError, match="teapot"):
        await provider.complete(ModelRequest("m", [user("hi")]))
    with pytest.raises(ModelTimeoutError):
        await provider.complete(ModelRequest("m", [user("hi")]))
    await provider.aclose()


async def test_delay_before_headers_is_a_timeout_not_a_hang(server: WireServer) -> None:
    server.on("/v1/messages", Reply.file("anthropic_stream.sse", delay=1.0))
    provider = Anthropic(base_url=server.base_url, api_key=ANTHROPIC_KEY, timeout=0.1)
    with pytest.raises(ModelTimeoutError, match="ReadTimeout"):
        async for _ in provider.stream(ModelRequest("claude", [user("hi")])):
            pass
    await provider.aclose()


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}, None),
        (
            {
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:40Z",
            },
            20.0,
        ),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after(headers, now=NOW)
    assert got == (None if expected is None else pytest.approx(expected))


def test_durations_and_masking() -> None:
    assert duration_seconds("1h2m3.5s") == pytest.approx(3723.5)
    assert duration_seconds("0.5") == 0.5 and duration_seconds("later") is None
    assert mask_secrets("key sk-ant-api03-AbCdEf123456 and sk-proj-xyzxyzxyz1") == (
        "key sk-ant-api03-*** and sk-proj-x***"
    )
    assert mask_secrets("token hunter2hunter2 here", "hunter2hunter2") == "token *** here"


def test_error_kinds_follow_the_tree() -> None:
    def kind(status: int, body: str) -> type[ModelError]:
        return type(error_from_response(status, {}, body.encode(), provider="p", model="m"))

    assert kind(400, '{"error": {"message": "x", "type": "overloaded_error"}}') is OverloadedError
    assert kind(502, "Bad Gateway") is OverloadedError
    assert kind(501, "Not Implemented") is ProviderError
    assert kind(422, '{"detail": "field required"}') is BadRequestError
    assert kind(400, '{"error": "input is too long for the model"}') is ContextTooLongError
