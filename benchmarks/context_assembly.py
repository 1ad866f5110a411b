"""Context assembly: a 200-turn thread (about 1 KB a message) and 8 memory items into an
8,000-token budget, the issue's target being <= 20 ms.

    python benchmarks/context_assembly.py [--quick] [--json]

Rows (one JSON object each with ``--json``, as ``run.py`` prints them):

* ``context-assembly``: ``assemble()`` as an agent calls it turn after turn (the thread
  read again from session memory as fresh JSON dicts each time; token counts of texts
  seen before come from the cache), p50 per call; p99 in ``p99_ms``.
* ``context-assembly-cold``: the same call with the count caches emptied first (a
  process's first look at the thread), p50.

The anchor of both is the naive fit: every message counted with tiktoken on every
call (``count_message_tokens`` per message, no cache), newest first until the budget
is full, the items likewise; it neither de-duplicates nor summarises. LangChain's
``trim_messages`` (strategy "last", a per-message tiktoken counter, on messages already
converted to LangChain's types) is reported beside it as ``langchain_trim_ms``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from mainspring.memory.context import GatewaySummarizer, assemble, counting, dedupe
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.items import Hit, MemoryItem
from mainspring.models import Gateway
from mainspring.models.messages import Message, as_messages
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.tokens import count_message_tokens, counter, encoding_for

from harness import Result, Settings, at_most, interleave, paired, sync_sampler
from report import print_json, print_table

TURNS = 200
BUDGET = 8000
TARGET_MS = 20.0
SYSTEM = "You are a travel assistant for Acme. Answer briefly, cite memory when you use it. " * 3
TASK = "Which train should I take to Lyon on Friday morning, and is my seat booked?"
WORDS = tuple(
    [
        "train",
        "ticket",
        "seat",
        "booking",
        "Lyon",
        "Paris",
        "Friday",
        "morning",
        "delay",
        "platform",
        "refund",
        "price",
        "window",
        "aisle",
        "return",
        "journey",
        "connection",
        "station",
        "coffee",
        "luggage",
        "passport",
        "hotel",
        "night",
        "the",
        "a",
        "to",
        "of",
        "and",
        "is",
        "in",
        "for",
        "on",
        "with",
        "at",
        "by",
        "from",
        "we",
        "you",
        "I",
        "it",
    ]
)


def thread(seed: int = 7) -> bytes:
    """200 messages of about 1 KB, alternating user and assistant, as session memory
    stores them (JSON)."""
    rng = random.Random(seed)
    messages = []
    for i in range(TURNS):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(140, 200)))
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: {text}"})
    return msgspec.json.encode(messages)


def items(seed: int = 8) -> list[Hit]:
    rng = random.Random(seed)
    return [
        Hit(
            MemoryItem(f"m{k}", " ".join(rng.choice(WORDS) for _ in range(60)), Scope()), 1 - k / 10
        )
        for k in range(8)
    ]


def naive(messages: list[Message], hits: list[Hit], model: str | None = None) -> list[Message]:
    """Counted afresh each call, newest first until the budget is full: the anchor."""
    room = BUDGET - count_message_tokens([Message("system", as_messages(SYSTEM)[0].content)])
    room -= count_message_tokens(as_messages(TASK))
    memory = []
    count = counter(encoding_for(model))[1]
    for hit in hits:
        n = count(hit.item.text) + 2
        if n <= room // 4:
            memory.append(hit.item.text)
            room -= n
    kept: list[Message] = []
    for m in reversed(messages):
        n = count_message_tokens([m]) - 3
        if n > room:
            break
        kept.append(m)
        room -= n
    return kept[::-1]


def langchain_trim(lc_messages: list[Any]) -> Any:
    from langchain_core.messages import BaseMessage
    from langchain_core.messages.utils import trim_messages

    count = counter(encoding_for(None))[1]

    def tokens(message: BaseMessage) -> int:
        return 3 + count(message.type) + count(str(message.content))

    # LangChain counts per message when the first parameter is annotated BaseMessage (the
    # real class: this module's annotations are strings), else per growing list.
    tokens.__annotations__ = {"message": BaseMessage, "return": int}

    return trim_messages(
        lc_messages, max_tokens=BUDGET, token_counter=tokens, strategy="last",
        include_system=True, start_on="human",
    )  # fmt: skip


def to_langchain(messages: list[dict[str, Any]]) -> list[Any] | None:
    try:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    except ImportError:
        return None
    out: list[Any] = [SystemMessage(SYSTEM)]
    for m in messages:
        out.append((HumanMessage if m["role"] == "user" else AIMessage)(m["content"]))
    out.append(HumanMessage(TASK))
    return out


def clear_caches() -> None:
    for encoding in ("o200k_base", "cl100k_base"):
        counting._cache_for(encoding).clear()
    dedupe._shape.cache_clear()


async def measure(settings: Settings) -> list[Result]:
    encoded = thread()
    hits = items()
    copies = [msgspec.json.decode(encoded) for _ in range(64)]
    turn = iter(range(10**9))

    def fresh() -> list[dict[str, Any]]:  # a new read of the thread, new str objects
        read: list[dict[str, Any]] = copies[next(turn) % len(copies)]
        return read

    def warm() -> Any:
        return _run(fresh(), hits)

    def cold() -> Any:
        clear_caches()
        return _run(fresh(), hits)

    converted = [as_messages(c) for c in copies]

    def anchor() -> Any:
        return naive(converted[next(turn) % len(converted)], hits)

    lc = to_langchain(copies[0])
    reps = settings.pick(5, 15)
    calls = settings.pick(10, 30)
    samplers = {
        "warm": sync_sampler(warm, calls),
        "cold": sync_sampler(cold, max(3, calls // 3)),
        "naive": sync_sampler(anchor, calls),
    }
    if lc is not None:
        samplers["langchain"] = sync_sampler(lambda: langchain_trim(lc), calls)
    samples = await interleave(samplers, reps=reps, warmup=1)

    singles = []
    for _ in range(settings.pick(200, 1000)):  # per-call times for the p99
        t0 = time.perf_counter()
        warm()
        singles.append((time.perf_counter() - t0) * 1e3)
    p99 = statistics.quantiles(singles, n=100)[98]
    p50 = statistics.median(singles)

    summarised = await _with_summarizer(copies[0], hits)
    result = _run(copies[0], hits)
    extra: dict[str, Any] = {
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_ms": samples["warm"].best_cpu * 1e3,
        "tokens": result.tokens,
        "kept_messages": sum(1 for e in result.included if e.source == "message"),
        "left_out": len(result.left_out),
        "with_summarizer_ms": summarised,
        "anchor_is": "naive: count_message_tokens per message with tiktoken, every call",
        "spread": samples["warm"].spread,
    }
    if lc is not None:
        extra["langchain_trim_ms"] = samples["langchain"].best * 1e3
    warm_row = Result(
        "context-assembly", samples["warm"].best * 1e3, samples["naive"].best * 1e3, "ms/call",
        paired_ratio=paired(samples["naive"], samples["warm"]),
        checks=[at_most(p99, TARGET_MS, f"p99 <= {TARGET_MS:g} ms")], extra=extra,
    )  # fmt: skip
    cold_row = Result(
        "context-assembly-cold", samples["cold"].best * 1e3, samples["naive"].best * 1e3,
        "ms/call", checks=[at_most(samples["cold"].best * 1e3, TARGET_MS, f"<= {TARGET_MS:g} ms")],
        extra={"note": "token-count caches emptied before each call"},
    )  # fmt: skip
    return [warm_row, cold_row]


def _run(messages: list[dict[str, Any]], hits: list[Hit]) -> Any:
    coro = assemble(TASK, budget=BUDGET, messages=messages, items=hits, system=SYSTEM)
    try:
        coro.send(None)  # no summarizer: assemble never suspends
    except StopIteration as done:
        return done.value
    raise AssertionError("assemble suspended without a summarizer")


async def _with_summarizer(messages: list[dict[str, Any]], hits: list[Hit]) -> float:
    """ms per call when older turns are summarised by a (scripted, instant) model through
    the gateway: the assembly's own cost on that path."""
    async with Gateway({"s": ScriptedModel(["Earlier the user compared trains to Lyon."])}) as gw:
        summarizer = GatewaySummarizer(gw, "s")
        t0 = time.perf_counter()
        n = 20
        for _ in range(n):
            await assemble(TASK, budget=BUDGET, messages=messages, items=hits, system=SYSTEM,
                           summarizer=summarizer)  # fmt: skip
        return (time.perf_counter() - t0) * 1e3 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(quick=args.quick, workdir=Path(tmp), pg_url="")
        results = anyio.run(measure, settings)
    if args.json:
        for r in results:
            print_json(r)
    else:
        print_table(
            results, title="Context assembly", context=f"{TURNS} messages into {BUDGET} tokens"
        )


if __name__ == "__main__":
    main()
