"""OpenAIEmbeddings against a real /embeddings server: batching, order, dimensions, errors."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mainspring.models.errors import ProviderError, RateLimitedError
from mainspring.models.messages import Usage
from mainspring.models.protocol import EmbeddingProvider
from mainspring.models.providers.openai_embeddings import OpenAIEmbeddings
from tests.wire_server import Received, Reply, WireServer, fixture_json

pytestmark = pytest.mark.anyio


def embed_each(request: Received) -> Reply:
    """A server that embeds text ``t`` as ``[len(t), index-in-batch]``, rows in reverse order
    (the API promises ``index``, not order) and the usage the published example shows."""
    body = request.json()
    rows = [
        {"object": "embedding", "embedding": [float(len(t)), float(i)], "index": i}
        for i, t in enumerate(body["input"])
    ]
    answer = fixture_json("embeddings_response.json")
    answer.update(data=rows[::-1], model=body["model"])
    return Reply.json(answer)


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as s:
        yield s


def test_is_an_embedding_provider() -> None:
    provider = OpenAIEmbeddings(base_url="http://127.0.0.1:9")
    assert isinstance(provider, EmbeddingProvider) and provider.dimensions == 1536


async def test_published_example(server: WireServer) -> None:
    server.on("/v1/embeddings", Reply.file("embeddings_response.json"))
    provider = OpenAIEmbeddings(
        "text-embedding-ada-002",
        base_url=f"{server.base_url}/v1",
        api_key="sk-test-embeddings-0123456789",
    )
    vectors = await provider.embed(["The food was delicious and the waiter..."])
    assert vectors == [[0.0023064255, -0.009327292, -0.0028842222]]
    sent = server.last()
    assert sent.headers["authorization"] == "Bearer sk-test-embeddings-0123456789"
    assert sent.json() == {
        "model": "text-embedding-ada-002",
        "encoding_format": "float",
        "input": ["The food was delicious and the waiter..."],
    }
    assert provider.usage == Usage(input_tokens=8)
    await provider.aclose()


async def test_batches_keep_order_and_reuse_connections(server: WireServer) -> None:
    server.on("/v1/embeddings", embed_each)
    provider = OpenAIEmbeddings(
        "local-e5", base_url=f"{server.base_url}/v1", dimensions=2, batch_size=4, max_concurrency=2
    )
    texts = ["x" * n for n in range(1, 11)]
    vectors = await provider.embed(texts)
    assert [v[0] for v in vectors] == [float(n) for n in range(1, 11)]
    assert [len(r.json()["input"]) for r in server.requests] == [4, 4, 2]
    assert all(r.json()["dimensions"] == 2 for r in server.requests)
    assert provider.dimensions == 2 and provider.usage.input_tokens == 24
    assert server.connections <= 2  # at most one per concurrent batch
    assert await provider.embed([]) == []
    await provider.aclose()


async def test_dimensions_learned_and_mismatch_reported(server: WireServer) -> None:
    short = fixture_json("embeddings_response.json")
    server.on("/v1/embeddings", Reply.json(short))
    provider = OpenAIEmbeddings("nomic-embed-text", base_url=f"{server.base_url}/v1")
    assert provider.dimensions == 0
    await provider.embed(["one"])
    assert provider.dimensions == 3
    with pytest.raises(ProviderError, match="1 vectors for 2 texts"):
        await provider.embed(["one", "two"])
    await provider.aclose()


async def test_errors_are_mapped(server: WireServer) -> None:
    server.on("/v1/embeddings", Reply.error("openai_errors.json", "rate_limited"))
    provider = OpenAIEmbeddings(base_url=f"{server.base_url}/v1", batch_size=1)
    with pytest.raises(RateLimitedError):
        await provider.embed(["a"])
    with pytest.raises(RateLimitedError):  # one of several batches: its error, not a group
        await provider.embed(["a", "b", "c"])
    await provider.aclose()


@pytest.mark.live
async def test_live_embeddings() -> None:
    base_url = os.environ.get("MAINSPRING_OPENAI_BASE_URL")
    if not (base_url or os.environ.get("OPENAI_API_KEY")):
        pytest.skip("set OPENAI_API_KEY or MAINSPRING_OPENAI_BASE_URL to call a real endpoint")
    model = os.environ.get("MAINSPRING_EMBEDDING_MODEL", "text-embedding-3-small")
    provider = OpenAIEmbeddings(model, base_url=base_url)
    vectors = await provider.embed(["cancel my order", "do not cancel my order"])
    assert len(vectors) == 2 and len(vectors[0]) == provider.dimensions > 0
    await provider.aclose()
