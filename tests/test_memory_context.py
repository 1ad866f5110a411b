"""Context assembly: fitting, de-duplication, ranking, summarising, and its report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring.memory.context import (
    AssembledContext,
    ContextBudgetError,
    ContextBuilder,
    GatewaySummarizer,
    Summary,
    assemble,
)
from mainspring.memory.context.counting import MARKER, TokenCounter
from mainspring.memory.scope import Scope
from mainspring.memory.semantic.items import Hit, MemoryItem, Source
from mainspring.models import Gateway
from mainspring.models.messages import Message, ToolCall, assistant, tool_result, user
from mainspring.models.providers.scripted import ScriptedModel
from mainspring.models.tokens import count_message_tokens

pytestmark = pytest.mark.anyio


def chat(turns: int, words: int = 40) -> list[Message]:
    out: list[Message] = []
    for i in range(turns):
        out.append(user(f"question {i}: " + " ".join(f"q{i}w{k}" for k in range(words))))
        out.append(assistant(f"answer {i}: " + " ".join(f"a{i}w{k}" for k in range(words))))
    return out


def hit(id: str, text: str, score: float, source: Source | None = None) -> Hit:
    return Hit(MemoryItem(id, text, Scope(), source=source), score)


def ids(ctx: AssembledContext) -> tuple[set[str], dict[str, str]]:
    return {e.id for e in ctx.included}, {e.id: e.reason for e in ctx.left_out}


def check_report(ctx: AssembledContext, inputs: set[str]) -> None:
    """tokens exact and within budget; every input accounted for exactly once."""
    assert ctx.tokens == count_message_tokens(ctx.messages)
    assert ctx.tokens <= ctx.budget
    seen = [e.id for e in ctx.included if e.id != "summary:generated"]
    seen += [e.id for e in ctx.left_out]
    assert sorted(seen) == sorted(inputs)


async def test_everything_fits_in_a_large_budget() -> None:
    msgs = chat(3)
    items = [hit("a", "the user's cat is called Misu", 0.9)]
    ctx = await assemble("what is my cat called?", budget=10_000, messages=msgs, items=items,
                         system="Be brief.")  # fmt: skip
    inc, out = ids(ctx)
    assert out == {}
    assert inc == {"system", "task", "a", *(f"message:{i}" for i in range(6))}
    assert ctx.messages[0].role == "system"
    assert "Be brief." in ctx.messages[0].text and "Misu" in ctx.messages[0].text
    assert [m.text for m in ctx.messages[1:-1]] == [m.text for m in msgs]
    assert ctx.messages[-1].text == "what is my cat called?"
    check_report(ctx, inc)


async def test_over_budget_drops_the_oldest_turns_and_keeps_the_last() -> None:
    msgs = chat(30)
    ctx = await assemble("go on", budget=600, messages=msgs, keep_last=2)
    inc, out = ids(ctx)
    kept = sorted(int(i.split(":")[1]) for i in inc if i.startswith("message:"))
    assert kept == list(range(kept[0], 60)), "kept turns are the newest, without gaps"
    assert {58, 59} <= set(kept)
    assert all(out[f"message:{i}"] == "budget" for i in range(kept[0]))
    check_report(ctx, {"task", *(f"message:{i}" for i in range(60))})


async def test_a_recent_turn_too_long_is_cut_with_a_marker() -> None:
    long = assistant("word " * 3000)
    ctx = await assemble("and?", budget=500, messages=[user("hi"), long], keep_last=2)
    cut = [e for e in ctx.left_out if e.reason == "truncated"]
    assert [e.id for e in cut] == ["message:1"] and cut[0].kept > 32
    assert ctx.messages[-2].text.endswith(MARKER)
    assert ctx.tokens <= 500
    check_report(ctx, {"task", "message:0", "message:1"})


async def test_an_item_repeating_a_message_in_context_is_a_duplicate() -> None:
    msgs = [user("My flight to Oslo leaves at 7:40 on Friday."), assistant("Noted.")]
    items = [
        hit("same", "my flight to oslo leaves at 7 40 on friday", 0.9),  # normalised equal
        hit("near", "My flight to Oslo leaves at 7:40 on Friday!!", 0.8),
        hit("other", "The user prefers aisle seats.", 0.7),
    ]
    ctx = await assemble("when do I fly?", budget=2000, messages=msgs, items=items)
    dup = {e.id: e.duplicate_of for e in ctx.left_out if e.reason == "duplicate"}
    assert dup == {"same": "message:0", "near": "message:0"}
    assert "aisle" in ctx.messages[0].text
    check_report(ctx, {"task", "message:0", "message:1", "same", "near", "other"})


async def test_near_same_items_keep_the_better_scored() -> None:
    a = "the deploy script lives in tools deploy sh and needs the prod key from vault"
    items = [hit("low", a + " too", 0.2), hit("high", a, 0.9), hit("x", "unrelated fact", 0.5)]
    ctx = await assemble("deploy?", budget=2000, items=items)
    dup = {e.id: e.duplicate_of for e in ctx.left_out if e.reason == "duplicate"}
    assert dup == {"low": "high"}
    text = ctx.messages[0].text
    assert text.index("deploy script") < text.index("unrelated"), "ranked by score"


async def test_an_item_that_repeats_a_dropped_message_is_kept() -> None:
    # the password message is old enough to be dropped: the item is then the only copy
    msgs = [user("The wifi password is hunter2-blue."), *chat(40)]
    items = [hit("pw", "The wifi password is hunter2-blue.", 0.9)]
    ctx = await assemble("what is the wifi password?", budget=800, messages=msgs, items=items)
    inc, out = ids(ctx)
    assert out["message:0"] == "budget" and "pw" in inc
    assert "hunter2" in ctx.messages[0].text


async def test_a_long_item_is_cut_to_the_room_left() -> None:
    items = [hit("big", "alpha " * 5000, 0.9)]
    ctx = await assemble("x", budget=1000, items=items)
    (cut,) = ctx.left_out
    assert (cut.id, cut.reason) == ("big", "truncated") and cut.kept > 500
    assert ctx.messages[0].text.endswith(MARKER)
    assert ctx.tokens <= 1000


async def test_items_show_their_citation() -> None:
    source = Source("guide.md", "The Guide", chunk=3, heading="Install > Linux")
    ctx = await assemble("how to install?", budget=1000,
                         items=[hit("c", "Run apt install foo.", 0.5, source)])  # fmt: skip
    assert (
        'Run apt install foo. [The Guide, "Install > Linux" (guide.md#3)]' in ctx.messages[0].text
    )


async def test_older_turns_are_summarised_through_the_gateway() -> None:
    model = ScriptedModel(["The user asked about trains; the 7:40 is late."])
    async with Gateway({"small": model}) as gateway:
        summarizer = GatewaySummarizer(gateway, "small")
        ctx = await assemble("next?", budget=700, messages=chat(30), summarizer=summarizer)
    inc, out = ids(ctx)
    assert (
        "summary:generated" in inc
        and ctx.summary == "The user asked about trains; the 7:40 is late."
    )
    assert "Summary of the earlier conversation:\nThe user asked" in ctx.messages[0].text
    summarized = [i for i, reason in out.items() if reason == "summarized"]
    assert summarized and "message:0" in summarized
    (request,) = model.calls
    assert "question 0:" in request.messages[-1].text, "the oldest turns went to the model"
    assert request.max_tokens is not None and request.max_tokens <= 512
    check_report(ctx, {"task", *(f"message:{i}" for i in range(60))})


async def test_a_summary_longer_than_asked_is_cut() -> None:
    class Verbose:
        async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
            return "blah " * (max_tokens * 4)

    ctx = await assemble("next?", budget=700, messages=chat(30), summarizer=Verbose())
    assert ctx.summary is not None and ctx.summary.endswith(MARKER)
    check_report(ctx, {"task", *(f"message:{i}" for i in range(60))})


async def test_a_failing_summarizer_falls_back_to_dropping() -> None:
    class Down:
        async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
            raise ConnectionError("model unreachable")

    ctx = await assemble("next?", budget=700, messages=chat(30), summarizer=Down())
    assert ctx.summary is None and ctx.summary_error == "ConnectionError: model unreachable"
    assert not ctx.left_out_by("summarized") and ctx.left_out_by("budget")
    check_report(ctx, {"task", *(f"message:{i}" for i in range(60))})


async def test_given_summaries_come_before_older_turns() -> None:
    ctx = await assemble("next?", budget=600, messages=chat(30),
                         summaries=["Earlier: the user booked Oslo.", Summary("x" * 10, id="s2")])  # fmt: skip
    inc, _ = ids(ctx)
    assert {"summary:0", "s2"} <= inc
    assert "Earlier: the user booked Oslo." in ctx.messages[0].text


async def test_a_thread_ending_with_the_task_does_not_repeat_it() -> None:
    msgs = [user("hello"), assistant("hi"), user("What time is it?")]
    ctx = await assemble("what time is it", budget=1000, messages=msgs)
    assert [m.text for m in ctx.messages] == ["hello", "hi", "what time is it"]
    assert ctx.left_out[0].reason == "duplicate" and ctx.left_out[0].duplicate_of == "task"


async def test_tool_results_are_never_left_without_their_call() -> None:
    call = ToolCall("c1", "search", {"q": "x" * 400})
    msgs = [
        user("find x"),
        assistant("", [call]),
        tool_result("c1", "result " * 50),
        assistant("found it"),
        user("thanks"),
    ]
    counter = TokenCounter()
    # room for the last three turns and the task but not for the call
    budget = 3 + sum(counter.message(m) for m in msgs[2:]) + counter.message(user("more")) + 2
    ctx = await assemble("more", budget=budget, messages=msgs, keep_last=2)
    assert all(m.role != "tool" for m in ctx.messages[:1])
    roles = [m.role for m in ctx.messages]
    assert "tool" not in roles or roles[roles.index("tool") - 1] == "assistant"
    check_report(ctx, {"task", *(f"message:{i}" for i in range(5))})


async def test_dict_messages_are_accepted() -> None:
    msgs: list[Any] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ctx = await assemble("and now?", budget=500, messages=msgs)
    assert [m.text for m in ctx.messages] == ["hi", "yo", "and now?"]


async def test_bad_input_is_refused_with_what_to_fix() -> None:
    with pytest.raises(ContextBudgetError, match="raise the budget"):
        await assemble("a task " * 100, budget=50)
    with pytest.raises(ValueError, match="positive number of tokens"):
        await assemble("x", budget=0)
    with pytest.raises(TypeError, match="messages\\[0\\]"):
        await assemble("x", budget=100, messages=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="items\\[0\\]"):
        await assemble("x", budget=100, items=["fact"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="item_share"):
        await assemble("x", budget=100, item_share=2)


async def test_the_counts_match_the_gateways_counter() -> None:
    counter = TokenCounter("gpt-4o")
    msgs = [*chat(2), assistant("", [ToolCall("c", "f", {"a": [1, 2]})]), tool_result("c", "ok")]
    assert counter.messages(msgs) == count_message_tokens(msgs, "gpt-4o")
    assert counter.messages(msgs) == counter.messages(msgs)  # cached, same answer
    text = "one two three " * 200
    cut = counter.truncate(text, 50)
    assert cut.endswith(MARKER) and counter.text(cut) <= 50


class History:
    def __init__(self, messages: list[Any]) -> None:
        self.stored = messages
        self.asked: list[tuple[str, int | None, str]] = []

    async def messages(
        self, thread: str, *, last: int | None = None, tenant: str = ""
    ) -> list[Any]:
        self.asked.append((thread, last, tenant))
        return self.stored[-last:] if last else list(self.stored)


class Search:
    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.asked: list[tuple[str, Scope, int]] = []

    async def search(self, query: str, *, scope: Scope, limit: int) -> list[Hit]:
        self.asked.append((query, scope, limit))
        return self.hits[:limit]


async def test_the_builder_reads_both_tiers() -> None:
    history = History(
        [{"role": "user", "content": "I live in Lyon."}, {"role": "assistant", "content": "Nice."}]
    )
    search = Search([hit("h", "The user likes rugby.", 0.7)])
    builder = ContextBuilder(session=history, semantic=search, system="Be kind.", items=3)
    scope = Scope("acme", user="u1")
    ctx = await builder.build("plans for Sunday?", thread="t1", scope=scope, budget=1000)
    assert history.asked == [("t1", 200, "acme")]
    assert search.asked == [("plans for Sunday?", scope, 3)]
    assert "rugby" in ctx.messages[0].text and ctx.messages[1].text == "I live in Lyon."


# -- the property: never over budget, every input accounted for once -------------------

words = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "42", "über", "!", "漢字"]),
                 min_size=0, max_size=120).map(" ".join)  # fmt: skip
roles = st.sampled_from(["user", "assistant"])


class Echo:
    """A summarizer that answers with a text of random length, sometimes too long."""

    def __init__(self, extra: int) -> None:
        self.extra = extra

    async def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        return "summary " * (max_tokens // 2 + self.extra)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgs=st.lists(st.tuples(roles, words), max_size=40),
    items=st.lists(st.tuples(words, st.floats(0, 1)), max_size=12),
    summaries=st.lists(words, max_size=3),
    budget=st.integers(1, 3000),
    keep_last=st.integers(0, 4),
    system=st.one_of(st.none(), words),
    summarise=st.one_of(st.none(), st.integers(0, 2000)),
    share=st.floats(0, 1),
)
def test_never_over_budget_and_every_input_once(
    msgs: list[tuple[str, str]], items: list[tuple[str, float]], summaries: list[str],
    budget: int, keep_last: int, system: str | None, summarise: int | None, share: float,
) -> None:  # fmt: skip
    messages = [Message(role, [] if not text else [user(text).content[0]]) for role, text in msgs]  # type: ignore[arg-type]
    hits = [hit(f"i{n}", text, score) for n, (text, score) in enumerate(items)]
    summarizer = Echo(summarise) if summarise is not None else None

    async def run() -> AssembledContext | None:
        try:
            return await assemble(
                "the task", budget=budget, messages=messages, items=hits, summaries=summaries,
                system=system, keep_last=keep_last, summarizer=summarizer, item_share=share,
            )  # fmt: skip
        except ContextBudgetError:
            return None

    ctx = anyio.run(run)
    if ctx is None:
        counter = TokenCounter()
        fixed = counter.messages(
            [user("the task")] + ([Message("system", user(system).content)] if system else [])
        )
        assert fixed > budget
        return
    inputs = {"task", *(f"message:{i}" for i in range(len(messages))), *(h.item.id for h in hits)}
    inputs |= {f"summary:{n}" for n in range(len(summaries))}
    if system:
        inputs.add("system")
    check_report(ctx, inputs)
