"""The semantic cache (issue 11, item 5): paraphrases share an answer, negations,
other numbers and names, and other intents never do; scopes, TTL and size bounds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from mainspring.models.cache_guard import normalise, signature
from mainspring.models.embeddings_local import LocalEmbeddings
from mainspring.models.semantic_cache import DEFAULT_THRESHOLD, SemanticCache, cache_scope

pytestmark = pytest.mark.anyio

PAIRS = json.loads((Path(__file__).parent / "data" / "semantic_cache_pairs.json").read_text())


class CountingEmbedder:
    """The local model, counting the texts it is asked to embed."""

    name = "counting"
    dimensions = 384

    def __init__(self, inner: LocalEmbeddings) -> None:
        self.inner = inner
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return await self.inner.embed(texts)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def local() -> LocalEmbeddings:
    embedder = LocalEmbeddings()
    embedder.load()
    return embedder


@pytest.fixture
def embedder(local: LocalEmbeddings) -> CountingEmbedder:
    return CountingEmbedder(local)


async def test_labelled_set_precision_and_recall(local: LocalEmbeddings) -> None:
    assert len(PAIRS["pairs"]) >= 60
    cache: SemanticCache[int] = SemanticCache(local)
    true_hits = wrong_hits = 0
    wrong: list[str] = []
    for i, pair in enumerate(PAIRS["pairs"]):
        scope = f"pair-{i}"
        await cache.store(pair["stored"], i, scope)
        got = await cache.lookup(pair["query"], scope)
        if got is None:
            continue
        assert got[0] == i and DEFAULT_THRESHOLD <= got[1] <= 1.0
        if pair["hit"]:
            true_hits += 1
        else:
            wrong_hits += 1
            wrong.append(f"{pair['stored']!r} -> {pair['query']!r}")
    should = sum(p["hit"] for p in PAIRS["pairs"])
    precision = true_hits / max(true_hits + wrong_hits, 1)
    recall = true_hits / should
    print(f"semantic cache @ {DEFAULT_THRESHOLD}: precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.95, wrong
    assert recall >= 0.8  # the cache must also be worth having


@pytest.mark.parametrize(
    ("stored", "query"),
    [
        ("cancel my order", "do not cancel my order"),
        ("Cancel my order", "Don\u2019t cancel my order!"),
        ("refund order 123", "refund order 456"),
        ("Book a table for two", "Book a table for three"),
        ("Enable two-factor authentication", "Disable two-factor authentication"),
        ("What's the weather in Paris?", "What's the weather in London?"),
        ("Translate 'yes' into French", "Translate 'no' into French"),
    ],
)
async def test_never_shares_an_answer(local: LocalEmbeddings, stored: str, query: str) -> None:
    cache: SemanticCache[str] = SemanticCache(local, threshold=0.5)  # guards alone decide
    await cache.store(stored, "answer")
    assert await cache.lookup(query) is None


async def test_exact_normalised_text_skips_the_embedding(embedder: CountingEmbedder) -> None:
    cache: SemanticCache[str] = SemanticCache(embedder)
    await cache.store("What are your opening hours?", "9 to 5")
    assert embedder.texts == ["what are your opening hours"]
    assert await cache.lookup("  what ARE your  opening hours ") == ("9 to 5", 1.0)
    assert embedder.texts == ["what are your opening hours"]  # no second embedding


async def test_a_store_after_a_miss_reuses_the_lookups_vector(embedder: CountingEmbedder) -> None:
    cache: SemanticCache[str] = SemanticCache(embedder)
    await cache.store("something else entirely", "x")
    assert await cache.lookup("How do I reset my password?") is None
    await cache.store("How do I reset my password?", "Use the link on the sign-in page.")
    assert embedder.texts.count("how do i reset my password") == 1
    hit = await cache.lookup("how can I reset my password")
    assert hit is not None and hit[0] == "Use the link on the sign-in page." and hit[1] > 0.9


async def test_scopes_never_share(local: LocalEmbeddings) -> None:
    cache: SemanticCache[str] = SemanticCache(local)
    small = cache_scope("small-model", {"temperature": 0})
    await cache.store("What is the capital of France?", "Paris", small)
    assert await cache.lookup("What is the capital of France?", small) == ("Paris", 1.0)
    for other in (
        cache_scope("large-model", {"temperature": 0}),
        cache_scope("small-model", {"temperature": 1}),
        cache_scope("small-model", {"temperature": 0}, tenant="acme"),
    ):
        assert other != small
        assert await cache.lookup("What is the capital of France?", other) is None
    assert cache_scope("m", {"a": 1, "b": 2}) == cache_scope("m", {"b": 2, "a": 1})


async def test_entries_expire(local: LocalEmbeddings) -> None:
    clock = Clock()
    cache: SemanticCache[str] = SemanticCache(local, ttl=60, clock=clock)
    await cache.store("Where is my package?", "in transit")
    clock.now += 59
    assert await cache.lookup("where's my package") is not None
    clock.now += 2
    assert await cache.lookup("where's my package") is None
    assert await cache.lookup("Where is my package?") is None
    assert len(cache) == 0


async def test_least_recently_used_go_first(local: LocalEmbeddings) -> None:
    cache: SemanticCache[int] = SemanticCache(local, max_items=2)
    await cache.store("What is your refund policy?", 1)
    await cache.store("Do you ship internationally?", 2)
    hit = await cache.lookup("what's your refund policy")
    assert hit is not None and hit[0] == 1 and hit[1] > 0.95
    await cache.store("Can I pay with PayPal?", 3)  # evicts "ship", used least recently
    assert len(cache) == 2
    assert await cache.lookup("Do you ship internationally?") is None
    assert (await cache.lookup("What is your refund policy?")) == (1, 1.0)
    # rows freed by eviction are reused: the matrix does not grow with churn
    for i in range(50):
        await cache.store(f"question number {i}", i)
    assert len(cache) == 2 and len(cache._scopes[""].keys) <= 3


async def test_storing_again_replaces(local: LocalEmbeddings) -> None:
    cache: SemanticCache[str] = SemanticCache(local)
    await cache.store("Cancel my order", "old")
    await cache.store("cancel my order.", "new")
    assert len(cache) == 1
    hit = await cache.lookup("please cancel my order")
    assert hit is not None and hit[0] == "new" and hit[1] > 0.9


def test_guard_signatures() -> None:
    assert normalise("  Hello,   World?! ") == "hello, world"
    assert signature("I can't go").negated and not signature("I can go").negated
    assert not signature("no, I do not want it").negated  # two negations: parity is even
    assert signature("refund 1,000 dollars").numbers == {"1000"}
    assert signature("book for two").numbers == signature("book for 2").numbers
    assert signature("Is it open on Sunday?").agrees_with(signature("open on sundays"))
    assert not signature("weather in Paris").agrees_with(signature("weather in London"))
    assert signature("Tell me more about Rome").agrees_with(signature("tell me about rome"))


def test_bad_settings_are_refused(local: LocalEmbeddings) -> None:
    with pytest.raises(ValueError, match="threshold"):
        SemanticCache(local, threshold=0)
    with pytest.raises(ValueError, match="max_items"):
        SemanticCache(local, max_items=0)
    with pytest.raises(ValueError, match="ttl"):
        SemanticCache(local, ttl=0)
