"""Spans derived from journals: fan-out, subgraphs, retries, interrupts, resumes in another runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainspring import Runtime
from mainspring.events import Event, EventKind, make_event
from mainspring.store import MemoryStore
from mainspring.telemetry import ids
from mainspring.telemetry.conventions import Capture, cap
from mainspring.telemetry.reader import trace_events
from mainspring.telemetry.spans.derive import SpanBuilder, derive_spans
from mainspring.telemetry.spans.record import SpanRecord
from mainspring.telemetry.tracing.tracer import JournalTracer

from . import telemetry_graphs as tg

pytestmark = pytest.mark.anyio


async def test_fan_out_retries_and_effects() -> None:
    store = MemoryStore()
    async with Runtime(store) as rt:
        await rt.run(
            tg.agent, {"text": "hi"}, run_id="fan", thread="t-1", metadata={"tenant": "acme"}
        )
        events = await rt.events("fan")
    spans = derive_spans(events)
    tg.check_tree(spans)
    named = tg.by_name(spans)
    run = named["invoke_workflow agent"][0]
    assert run.trace_id == ids.trace_id("fan", tg.started(events).nonce)
    assert run.span_id == ids.run_span_id("fan")
    assert run.attributes["gen_ai.conversation.id"] == "t-1"
    assert run.attributes["mainspring.tenant"] == "acme"
    assert run.start_ns == int(events[0].ts * 1e9) and run.end_ns == int(events[-1].ts * 1e9)

    work = named["node work"]
    assert len(work) == 3 and all(w.parent_id == run.span_id for w in work)
    assert len({w.attributes["mainspring.step"] for w in work}) == 1
    # the Send branches ran side by side
    assert max(w.start_ns for w in work) < min(w.end_ns or 0 for w in work)

    answers = sorted(named["node answer"], key=lambda s: s.start_ns)
    assert [a.attributes["mainspring.attempt"] for a in answers] == [1, 2]
    assert (
        answers[0].status == "error" and answers[0].attributes["mainspring.outcome"] == "retrying"
    )
    [exception] = list(answers[0].events)
    assert (
        exception.name == "exception"
        and exception.attributes["exception.type"] == "ConnectionError"
    )
    assert (
        answers[1].status == "unset" and answers[1].attributes["mainspring.outcome"] == "finished"
    )

    tools = named["execute_tool search"]
    chats = named["chat small-1"]
    # the first attempt ran both effects; the retry replayed them from the journal (no new spans)
    assert len(tools) == 1 and len(chats) == 1
    assert tools[0].parent_id == answers[0].span_id
    assert tools[0].attributes["gen_ai.tool.call.id"] == "fan:2.0.0"
    assert tools[0].span_id == ids.effect_span_id("fan", "fan:2.0.0")
    chat = chats[0].attributes
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "small-1" and chat["gen_ai.provider.name"] == "acme-ai"
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (12, 5)
    assert chat["gen_ai.conversation.id"] == "t-1"
    assert chats[0].client and not run.client


async def test_subgraph_runs_nest_under_the_parent_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub.db'}"
    async with Runtime.open(url) as rt:
        handle = await rt.start(tg.parent, {}, run_id="p")
        outcome = await handle.wait()
        assert outcome.interrupts
        await rt.resume("p", True)
        await handle.result()
        events = await trace_events(rt.store, "p")
    spans = derive_spans(events)
    tg.check_tree(spans)
    root = next(e for e in events if e.run_id == "p")
    assert {s.trace_id for s in spans} == {ids.trace_id("p", tg.started([root]).nonce)}
    named = tg.by_name(spans)
    review = sorted(named["node review"], key=lambda s: s.start_ns)
    assert len(review) == 2 and review[1].attributes["mainspring.rerun"] is True
    child = named["invoke_workflow approval"][0]
    assert child.run_id == "p/review.1.0"
    assert child.parent_id == review[0].span_id  # the attempt that started the child run
    assert all(s.parent_id == child.span_id for s in named["node draft"])
    waits = named["interrupt approve"] + named["interrupt review"]
    assert len(waits) == 2 and all(w.end_ns is not None for w in waits)


async def test_failed_run_sets_error_status() -> None:
    async with Runtime(MemoryStore()) as rt:
        handle = await rt.start(tg.failing, {}, run_id="f")
        await handle.wait()
        events = await rt.events("f")
    spans = derive_spans(events)
    run = tg.by_name(spans)["invoke_workflow failing"][0]
    boom = tg.by_name(spans)["node boom"][0]
    assert run.status == boom.status == "error"
    assert "ValueError: bad input" in run.status_message
    [exception] = list(boom.events)
    assert "Traceback" in str(exception.attributes["exception.stacktrace"])


def _exported(tracer: JournalTracer) -> list[SpanRecord]:
    """Exported OTel spans turned back into comparable tuples."""
    assert tracer.exporter is not None
    out = []
    for s in tracer.exporter.get_finished_spans():  # type: ignore[attr-defined]
        assert s.context is not None
        out.append(
            SpanRecord(
                s.name,
                "run",
                "",
                s.context.trace_id,
                s.context.span_id,
                s.parent.span_id if s.parent is not None else None,
                s.start_time or 0,
                s.end_time,
            )
        )
    return out


def _key(s: SpanRecord) -> tuple[Any, ...]:
    return (s.name, s.trace_id, s.span_id, s.parent_id, s.start_ns, s.end_ns)


@pytest.mark.parametrize("graph", ["approval", "parent"])
async def test_resume_in_a_new_runtime_continues_the_trace(tmp_path: Path, graph: str) -> None:
    """Live spans of two processes (one parks, the other resumes) == spans of the whole journal."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    app = tg.approval if graph == "approval" else tg.parent
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    first = JournalTracer(InMemorySpanExporter(), store=url)
    # a short lease: the takeover must not depend on the first runtime releasing it
    async with Runtime.open(url, listeners=[first], lease_ttl=0.2) as rt:
        handle = await rt.start(app, {"text": "doc"}, run_id="r1")
        assert (await handle.wait()).interrupts
    first.shutdown()
    await anyio.sleep(0.25)
    second = JournalTracer(InMemorySpanExporter(), store=url)
    async with Runtime.open(url, listeners=[second], recover="off") as rt:
        await (await rt.resume("r1", True, graph=app)).result()
        events = await trace_events(rt.store, "r1")
    second.shutdown()

    live = _exported(first) + _exported(second)
    expected = derive_spans(events)
    assert all(s.end_ns is not None for s in expected)
    assert sorted(map(_key, live)) == sorted(map(_key, expected))
    assert {s.trace_id for s in live} == {ids.trace_of("r1", tg.started(events))}
    tg.check_tree(expected)
    # the second process exported the run span, the wait and the rerun; not the first's spans again
    names2 = {s.name for s in _exported(second)}
    assert f"invoke_workflow {app.name}" in names2
    assert not {s.span_id for s in _exported(first)} & {s.span_id for s in _exported(second)}


def _ev(seq: int, kind: EventKind, ts: float, **data: Any) -> Event:
    return make_event("c", seq, kind, ts, data)


def test_a_crashed_attempt_is_abandoned_and_its_effect_rerun_keeps_the_key() -> None:
    events = [
        _ev(1, EventKind.RUN_STARTED, 1.0, graph="g", durability="sync"),
        _ev(2, EventKind.STEP_STARTED, 1.1, step=0, task=0, node="a"),
        _ev(
            3,
            EventKind.EFFECT_STARTED,
            1.2,
            step=0,
            task=0,
            node="a",
            effect=0,
            name="tool:x",
            key="c:0.0.0",
        ),
        # the process died here; another one takes the run over
        _ev(4, EventKind.STEP_STARTED, 5.0, step=0, task=0, node="a", attempt=1, rerun=True),
        _ev(
            5,
            EventKind.EFFECT_STARTED,
            5.1,
            step=0,
            task=0,
            node="a",
            effect=0,
            name="tool:x",
            key="c:0.0.0",
        ),
        _ev(
            6,
            EventKind.EFFECT_FINISHED,
            5.2,
            step=0,
            task=0,
            node="a",
            effect=0,
            name="tool:x",
            result=1,
        ),
        _ev(7, EventKind.STEP_FINISHED, 5.3, step=0, task=0, node="a", update={}),
        _ev(8, EventKind.FINISHED, 5.4),
    ]
    spans = derive_spans(events)
    tg.check_tree(spans)
    tools = sorted(tg.by_name(spans)["execute_tool x"], key=lambda s: s.start_ns)
    assert tools[0].status == "error" and tools[0].attributes["mainspring.outcome"] == "abandoned"
    assert tools[0].span_id == ids.abandoned_effect_span_id("c", "c:0.0.0", 3)
    assert tools[1].span_id == ids.effect_span_id("c", "c:0.0.0") and tools[1].status == "unset"
    attempts = sorted(tg.by_name(spans)["node a"], key=lambda s: s.start_ns)
    assert attempts[0].attributes["mainspring.outcome"] == "abandoned"
    assert attempts[0].end_ns == int(1.2e9)  # its last sign of life


def test_capture_redacts_and_caps() -> None:
    capture = Capture(
        True, lambda key, value: "***" if key == "mainspring.input" else value, max_bytes=40
    )
    events = [
        _ev(1, EventKind.RUN_STARTED, 1.0, graph="g", input={"password": "x"}),
        _ev(2, EventKind.STEP_STARTED, 1.1, step=0, task=0, node="a"),
        _ev(3, EventKind.STEP_FINISHED, 1.2, step=0, task=0, node="a", update={"text": "y" * 100}),
    ]
    spans = tg.by_name(derive_spans(events, capture))
    assert spans["invoke_workflow g"][0].attributes["mainspring.input"] == "***"
    update = str(spans["node a"][0].attributes["mainspring.update"])
    assert len(update.encode()) <= 40 and update.endswith("bytes]")
    assert "mainspring.update" not in tg.by_name(derive_spans(events))["node a"][0].attributes
    assert cap("é" * 30, 20) == "ééé...[60 bytes]"  # never cuts a character in two


# -- property: any well-formed journal gives a well-formed trace, however it is split between processes


@st.composite
def journals(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    clock = [1000.0]

    def add(kind: EventKind, **data: Any) -> None:
        clock[0] += draw(st.floats(0.0, 1.0))
        events.append(make_event("r", len(events) + 1, kind, clock[0], data))

    add(EventKind.RUN_STARTED, graph="g", durability="sync")
    for step in range(draw(st.integers(0, 3))):
        tasks = draw(st.integers(1, 3))
        for task in range(tasks):
            add(EventKind.STEP_STARTED, step=step, task=task, node=f"n{task}")
        for task in range(tasks):
            attempt, base = 1, dict(step=step, task=task, node=f"n{task}")
            while True:
                for index in range(draw(st.integers(0, 2))):
                    key = f"r:{step}.{task}.{index}" + (f"#a{attempt}" if attempt > 1 else "")
                    add(
                        EventKind.EFFECT_STARTED,
                        **base,
                        effect=index,
                        name="tool:t",
                        key=key,
                        attempt=attempt,
                    )
                    if draw(st.booleans()):
                        add(
                            EventKind.EFFECT_FINISHED,
                            **base,
                            effect=index,
                            name="tool:t",
                            result=index,
                        )
                    else:  # left open: the process crashed in the effect
                        add(EventKind.STEP_STARTED, **base, attempt=attempt, rerun=True)
                        add(
                            EventKind.EFFECT_STARTED,
                            **base,
                            effect=index,
                            name="tool:t",
                            key=key,
                            attempt=attempt,
                        )
                        add(
                            EventKind.EFFECT_FINISHED,
                            **base,
                            effect=index,
                            name="tool:t",
                            result=index,
                        )
                if draw(st.booleans()):
                    add(EventKind.EMITTED, **base, data={"k": 1})
                action = draw(st.sampled_from(["finish", "retry", "interrupt"]))
                if action == "retry" and attempt < 3:
                    add(
                        EventKind.STEP_FAILED,
                        **base,
                        attempt=attempt,
                        retry=True,
                        delay=0.0,
                        error={"type": "E", "message": "m"},
                    )
                    attempt += 1
                    add(EventKind.STEP_STARTED, **base, attempt=attempt)
                    continue
                if action == "interrupt":
                    iid = f"{step}.{task}.0"
                    add(EventKind.INTERRUPTED, **base, interrupt=0, id=iid, payload=None)
                    add(EventKind.RESUMED, values={iid: True})
                    add(EventKind.STEP_STARTED, **base, attempt=attempt, rerun=True)
                add(EventKind.STEP_FINISHED, **base, update={})
                break
    end = draw(st.sampled_from([EventKind.FINISHED, EventKind.FAILED, EventKind.CANCELLED, None]))
    if end is EventKind.FAILED:
        add(end, error={"type": "E", "message": "m"})
    elif end is not None:
        add(end, reason="r") if end is EventKind.CANCELLED else add(end)
    return events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journals(), st.data())
def test_any_journal_gives_a_well_formed_trace_however_split(
    events: list[Event], data: st.DataObject
) -> None:
    spans = derive_spans(events)
    tg.check_tree(spans)
    closed = sorted(_key(s) for s in spans if s.end_ns is not None)
    # process A traced events[:cut] live; process B read them as history and traced the rest
    cut = data.draw(st.integers(1, len(events)))
    a, b = SpanBuilder(), SpanBuilder()
    live = [s for e in events[:cut] for s in a.feed(e)]
    for e in events[:cut]:
        b.feed(e, replay=True)
    live += [s for e in events[cut:] for s in b.feed(e)]
    assert sorted(map(_key, live)) == closed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journals(), st.data())
def test_a_process_killed_before_exporting_loses_nothing_its_successor_reexports(
    events: list[Event], data: st.DataObject
) -> None:
    """A traced events[:cut] live but got only the spans of events[:exported] out (its cursor),
    then died; B replays events[:exported] and traces the rest live: every span once."""
    closed = sorted(_key(s) for s in derive_spans(events) if s.end_ns is not None)
    cut = data.draw(st.integers(1, len(events)))
    exported = data.draw(st.integers(0, cut))
    a, b = SpanBuilder(), SpanBuilder()
    out = [s for e in events[:exported] for s in a.feed(e)]  # A: what got out before it died
    out += [s for e in events[:cut] for s in b.feed(e, replay=e.seq <= exported)]  # B: backfill
    out += [s for e in events[cut:] for s in b.feed(e)]  # B: live
    assert sorted(map(_key, out)) == closed


def test_an_effect_cut_short_by_its_node_timing_out_keeps_its_id() -> None:
    events = [
        _ev(1, EventKind.RUN_STARTED, 1.0, graph="g"),
        _ev(2, EventKind.STEP_STARTED, 1.0, step=0, task=0, node="a"),
        _ev(
            3,
            EventKind.EFFECT_STARTED,
            1.1,
            step=0,
            task=0,
            node="a",
            effect=0,
            name="tool:slow",
            key="c:0.0.0",
        ),
        _ev(
            4,
            EventKind.STEP_FAILED,
            6.0,
            step=0,
            task=0,
            node="a",
            attempt=1,
            retry=False,
            error={"type": "NodeTimeoutError", "message": "ran longer than 5 s"},
        ),
        _ev(
            5,
            EventKind.FAILED,
            6.0,
            error={"type": "NodeTimeoutError", "message": "ran longer than 5 s"},
        ),
    ]
    spans = derive_spans(events)
    tg.check_tree(spans)
    tool = tg.by_name(spans)["execute_tool slow"][0]
    assert tool.attributes["mainspring.outcome"] == "cancelled" and tool.status == "unset"
    assert tool.span_id == ids.effect_span_id(
        "c", "c:0.0.0"
    )  # external spans parented to it stay attached
    assert tool.end_ns == int(6e9)
    assert tg.by_name(spans)["node a"][0].status_message.startswith("NodeTimeoutError")


# -- trace ids: a per-run nonce keeps runs of one caller-chosen id apart


async def test_two_runs_given_the_same_id_get_different_traces(tmp_path: Path) -> None:
    """Staging and prod both run "order-1": a backend must see two traces, not one twice."""
    traces = []
    for env in ("staging", "prod"):
        async with Runtime.open(f"sqlite:///{tmp_path / env}.db") as rt:
            await rt.run(tg.linear, {}, run_id="order-1")
            spans = derive_spans(await rt.events("order-1"))
        tg.check_tree(spans)
        traces.append(spans[0].trace_id)
    assert traces[0] != traces[1]


async def test_a_subgraph_run_is_in_its_roots_trace_even_read_alone() -> None:
    store = MemoryStore()
    async with Runtime(store) as rt:
        handle = await rt.start(tg.parent, {}, run_id="p")
        await handle.wait()
        root = await rt.events("p")
        child = await rt.events("p/review.1.0")
    parent = tg.started(child).parent
    assert parent is not None and parent.root_nonce == tg.started(root).nonce
    trace = ids.trace_of("p", tg.started(root))
    assert {s.trace_id for s in derive_spans(root)} == {trace}
    assert {s.trace_id for s in derive_spans(child)} == {trace}  # parent unknown to the builder
    assert ids.trace_of("p/review.1.0", tg.started(child)) == trace


def test_runs_from_before_nonces_keep_their_trace_ids() -> None:
    import hashlib

    events = [
        _ev(1, EventKind.RUN_STARTED, 1.0, graph="g"),  # no nonce: written by an older version
        _ev(2, EventKind.STEP_STARTED, 1.1, step=0, task=0, node="a"),
        _ev(3, EventKind.STEP_FINISHED, 1.2, step=0, task=0, node="a", update={}),
        _ev(4, EventKind.FINISHED, 1.3),
        make_event("c/b.1.0", 1, EventKind.RUN_STARTED, 1.15, {"graph": "h", "parent": {
            "run_id": "c", "root": "c", "step": 0, "task": 0, "node": "a"}}),
    ]  # fmt: skip
    old = int.from_bytes(hashlib.blake2b(b"trace\x1fc", digest_size=16).digest(), "big")
    assert {s.trace_id for s in derive_spans(events)} == {old}
    assert {s.trace_id for s in derive_spans(events[-1:])} == {old}
    assert ids.trace_id("c") == ids.trace_id("c", None) == old


async def test_a_fork_is_a_trace_of_its_own_linked_to_its_source() -> None:
    store = MemoryStore()
    async with Runtime(store) as rt:
        await rt.run(tg.linear, {}, run_id="src")
        await (await rt.fork("src", at=6, new_run_id="fork")).result()
        source, fork = await rt.events("src"), await rt.events("fork")
    assert tg.started(fork).nonce != tg.started(source).nonce
    [run] = [s for s in derive_spans(fork) if s.kind == "run"]
    source_trace = ids.trace_of("src", tg.started(source))
    assert run.trace_id == ids.trace_of("fork", tg.started(fork)) != source_trace
    assert run.links == [(source_trace, ids.run_span_id("src"))]


# -- GenAI operation names: a workflow step is not an agent


async def test_a_plain_node_is_a_workflow_step_not_an_agent_call() -> None:
    async with Runtime(MemoryStore()) as rt:
        await rt.run(tg.linear, {}, run_id="wf")
        await rt.run(tg.linear, {}, run_id="ag", metadata={"agent": "support"})
        workflow, agent = await rt.events("wf"), await rt.events("ag")
    for events, run_name, op in (
        (workflow, "invoke_workflow linear", "invoke_workflow"),
        (agent, "invoke_agent support", "invoke_agent"),
    ):
        spans = derive_spans(events)
        [run] = [s for s in spans if s.kind == "run"]
        assert run.name == run_name and run.attributes["gen_ai.operation.name"] == op
        nodes = [s for s in spans if s.kind == "node"]
        assert sorted(s.name for s in nodes) == sorted(f"node n{i}" for i in range(10))
        for node in nodes:
            assert not any(k.startswith("gen_ai.operation") for k in node.attributes)
            assert "gen_ai.agent.name" not in node.attributes
    [run] = [s for s in derive_spans(agent) if s.kind == "run"]
    assert run.attributes["gen_ai.agent.name"] == "support"


# -- capture: a model's reply in gen_ai.output.messages


async def test_with_capture_a_models_reply_is_in_its_gen_ai_output_messages() -> None:
    import orjson

    async with Runtime(MemoryStore()) as rt:
        await rt.run(tg.agent, {"text": "hi"}, run_id="cap")
        events = await rt.events("cap")
    [chat] = tg.by_name(derive_spans(events, Capture(True)))["chat small-1"]
    assert orjson.loads(str(chat.attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "HI"}], "finish_reason": "stop"}
    ]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "mainspring.effect.result" not in chat.attributes  # the reply is not recorded twice
    [plain] = tg.by_name(derive_spans(events))["chat small-1"]
    assert "gen_ai.output.messages" not in plain.attributes  # capture off: no content
    assert plain.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_output_messages_of_the_common_reply_shapes() -> None:
    from mainspring.telemetry.spans.genai import output_messages

    openai = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            },
            {"message": {"role": "assistant", "content": "Rainy."}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    assert output_messages(openai) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "name": "weather", "id": "call_1", "arguments": {"city": "Paris"}}
            ],
            "finish_reason": "tool_call",
        },
        {"role": "assistant", "parts": [{"type": "text", "content": "Rainy."}], "finish_reason": "length"},
    ]  # fmt: skip
    anthropic = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
    }
    assert output_messages(anthropic) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me look."},
                {"type": "tool_call", "name": "weather", "id": "toolu_1", "arguments": {"city": "Oslo"}},
            ],
            "finish_reason": "tool_call",
        }
    ]  # fmt: skip
    responses = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "42"}]},
        ]
    }  # fmt: skip
    assert output_messages(responses)[0]["parts"] == [{"type": "text", "content": "42"}]
    assert output_messages("plain") == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "plain"}],
            "finish_reason": "stop",
        }
    ]
    odd = output_messages({"answer": 7, "usage": {"input_tokens": 1}, "model": "m"})
    assert odd[0]["parts"] == [{"type": "text", "content": '{"answer":7}'}]


def test_a_long_reply_is_cut_inside_its_text_so_the_json_stays_valid() -> None:
    import orjson

    from mainspring.telemetry.spans.genai import output_messages

    text = Capture(True, max_bytes=200).text(
        "gen_ai.output.messages", output_messages({"text": "é" * 500}), as_json=True
    )
    assert text is not None and len(text.encode()) <= 200
    [message] = orjson.loads(text)
    assert message["parts"][0]["content"].endswith("bytes]")
