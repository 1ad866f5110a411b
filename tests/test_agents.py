"""The agent loop (mainspring.agents) on a real Runtime over SQLite, with scripted models.

Scripts are functions of the conversation where the order of calls matters, so what the
model is shown (tool results, errors, instructions, tools offered) is asserted directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
import pytest
from pydantic import BaseModel

from mainspring import END, START, Graph, RunStatus, Runtime, SyncRuntime, append
from mainspring.agents import Agent, AgentError, AgentResult, MaxTurnsExceeded
from mainspring.agents.state import final_text, message_dicts
from mainspring.events import EffectStarted, StepStarted
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.tools import tool
from tests import agent_worker

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agents.db'}"


def _open(tmp_path: Path, agent: Agent, **models: ScriptedModel) -> Runtime:
    """A runtime on SQLite with these scripted models and the agent's tools."""
    return Runtime.open(_url(tmp_path), models=Gateway(models), tools=agent.toolbox)


def _tool_texts(request: ModelRequest) -> list[str]:
    return [m.text for m in request.messages if m.role == "tool"]


def _results(request: ModelRequest) -> int:
    return sum(1 for m in request.messages if m.role == "tool")


# -- the loop ---------------------------------------------------------------------------


async def test_a_tool_using_loop_answers_from_the_tools_results(tmp_path: Path) -> None:
    @tool
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return f"sunny in {city}"

    def script(request: ModelRequest) -> Any:
        if _results(request) == 0:
            return [ToolCall("c1", "weather", {"city": "Paris"})]
        return f"It is {request.messages[-1].text}."

    model = ScriptedModel(script)
    agent = Agent("forecaster", "fast", "Answer about the weather.", tools=[weather])
    async with _open(tmp_path, agent, fast=model) as rt:
        result = await agent.run(rt, "Weather in Paris?")
        events = await rt.events(result.run_id)
    assert result.status is RunStatus.FINISHED and result.text == "It is sunny in Paris."
    assert result.turns == 2 and result.agent == "forecaster"
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    first = model.calls[0]
    assert first.messages[0].role == "system" and first.messages[0].text.startswith("Answer")
    assert [t.name for t in first.tools] == ["weather"]
    kinds = [e.data.effect_kind for e in events if isinstance(e.data, EffectStarted)]
    assert kinds == ["model", "tool", "model"]  # every call journaled through the gate


async def test_parallel_tool_calls_run_as_one_superstep_and_return_in_call_order(
    tmp_path: Path,
) -> None:
    finished: list[str] = []

    @tool
    async def fetch(name: str, delay: float) -> str:
        """Fetch a document after a delay."""
        await anyio.sleep(delay)
        finished.append(name)
        return f"doc {name}"

    calls = [ToolCall(f"c{i}", "fetch", {"name": n, "delay": d})
             for i, (n, d) in enumerate([("a", 0.6), ("b", 0.4), ("c", 0.2)])]  # fmt: skip

    def script(request: ModelRequest) -> Any:
        return calls if _results(request) == 0 else " + ".join(_tool_texts(request))

    model = ScriptedModel(script)
    agent = Agent("reader", "fast", "Read.", tools=[fetch])
    async with _open(tmp_path, agent, fast=model) as rt:
        began = time.monotonic()
        result = await agent.run(rt, "read a, b and c")
        took = time.monotonic() - began
        events = await rt.events(result.run_id)
    assert finished == ["c", "b", "a"]  # they finished in reverse order...
    assert result.text == "doc a + doc b + doc c"  # ...and came back in call order
    ids = [m.tool_call_id for m in model.calls[1].messages if m.role == "tool"]
    assert ids == ["c0", "c1", "c2"]
    assert took < 1.1  # concurrently: not 0.6 + 0.4 + 0.2 one after the other
    tool_tasks = [
        e.data for e in events if isinstance(e.data, StepStarted) and e.data.node == "tools"
    ]
    assert len(tool_tasks) == 3 and len({t.step for t in tool_tasks}) == 1  # one step, 3 tasks
    assert [t.task for t in tool_tasks] == [0, 1, 2]


async def test_a_bad_argument_goes_back_to_the_model_which_corrects_it(tmp_path: Path) -> None:
    added: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        added.append((a, b))
        return a + b

    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("the disk is on fire")

    def script(request: ModelRequest) -> Any:
        results = _tool_texts(request)
        if not results:
            return [ToolCall("c1", "add", {"a": 2, "b": "two"}), ToolCall("c2", "broken", {}),
                    ToolCall("c3", "nosuch", {})]  # fmt: skip
        if len(results) == 3:
            return [ToolCall("c4", "add", {"a": 2, "b": 2})]
        return f"the sum is {results[-1]}"

    model = ScriptedModel(script)
    agent = Agent("calc", "fast", "Add.", tools=[add, broken])
    async with _open(tmp_path, agent, fast=model) as rt:
        result = await agent.run(rt, "2 + 2?")
    bad, failed, unknown = _tool_texts(model.calls[1])
    assert bad.startswith("error: invalid arguments for tool 'add'") and "b:" in bad
    assert "valid integer" in bad and "Call it again" in bad
    assert failed.startswith("error: tool 'broken' failed: RuntimeError: the disk is on fire")
    assert "no tool named 'nosuch'" in unknown and "add, broken" in unknown
    assert added == [(2, 2)] and result.text == "the sum is 4"


# -- approvals --------------------------------------------------------------------------


def _approval_setup() -> tuple[Agent, ScriptedModel, list[tuple[str, int]]]:
    paid: list[tuple[str, int]] = []

    @tool(needs_approval=lambda args: args["amount"] > 100)
    def pay(to: str, amount: int) -> str:
        """Pay someone."""
        paid.append((to, amount))
        return f"paid {amount} to {to}"

    def script(request: ModelRequest) -> Any:
        if _results(request) == 0:
            return [ToolCall("p1", "pay", {"to": "ada", "amount": 500})]
        return "outcome: " + request.messages[-1].text

    model = ScriptedModel(script)
    return Agent("payer", "fast", "Pay.", tools=[pay]), model, paid


async def test_approval_parks_the_run_and_approve_reject_edit_work(tmp_path: Path) -> None:
    agent, model, paid = _approval_setup()
    async with _open(tmp_path, agent, fast=model) as rt:
        approved = await agent.run(rt, "pay ada")
        assert approved.parked and approved.status is RunStatus.INTERRUPTED and not paid
        asked = approved.approvals[0].payload
        assert asked["data"] == {"tool": "pay", "args": {"to": "ada", "amount": 500}}
        done = await agent.resume(rt, approved.run_id, True)
        assert done.text == "outcome: paid 500 to ada" and paid == [("ada", 500)]

        rejected = await agent.run(rt, "pay ada")
        done = await agent.resume(rt, rejected.run_id, {"approve": False, "reason": "too much"})
        assert done.text == "outcome: error: the call of 'pay' was not made: too much"
        assert paid == [("ada", 500)]  # not paid again

        edited = await agent.run(rt, "pay ada")
        done = await agent.resume(rt, edited.run_id, {"args": {"to": "ada", "amount": 90}})
        assert done.text == "outcome: paid 90 to ada" and paid[-1] == ("ada", 90)


# -- durable across a kill --------------------------------------------------------------


def _spawn(tmp_path: Path, scenario: str, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENT_WORKER_LOG": str(log), "PYTHONPATH": str(REPO)}
    if scenario == "slow":
        env["AGENT_WORKER_SLOW"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent_worker", "--db", str(tmp_path / "agents.db"),
         "--scenario", scenario],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited before {what}: {proc.stderr.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the worker never reached {what}")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def test_a_parked_agent_survives_a_kill_and_nothing_runs_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    proc = _spawn(tmp_path, "parked", log)
    line = await anyio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
    assert line.strip() == "PARKED interrupted", proc.stderr.read()  # type: ignore[union-attr]
    _kill(proc)
    before = log.read_text().splitlines()
    assert [entry.split()[:2] for entry in before] == [
        ["model", "1"],
        ["tool", "lookup"],
        ["model", "2"],
    ]
    monkeypatch.setenv("AGENT_WORKER_LOG", str(log))
    agent = agent_worker.parked_agent
    gateway = agent_worker.gateway("parked")
    async with Runtime.open(
        _url(tmp_path), models=gateway, tools=agent.toolbox, recover="list"
    ) as rt:
        parked = await rt.outcome(agent_worker.RUN_ID, agent.graph)
        assert parked.status is RunStatus.INTERRUPTED
        result = await agent.resume(rt, agent_worker.RUN_ID, True)
    after = log.read_text().splitlines()[len(before) :]
    assert [entry.split()[:2] for entry in after] == [["tool", "refund"], ["model", "3"]]
    assert result.text == "refunded: refunded 250 on A-17"


async def test_a_slow_tool_killed_mid_call_runs_again_with_its_key_and_nothing_else_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    proc = _spawn(tmp_path, "slow", log)

    def slow_started() -> bool:
        return log.exists() and "slow_report" in log.read_text()

    _wait_for(slow_started, proc, "the slow tool")
    time.sleep(0.3)  # the parallel lookup's result is committed meanwhile
    _kill(proc)
    before = log.read_text().splitlines()
    assert sorted(e.split()[1] for e in before) == ["1", "lookup", "slow_report"]
    monkeypatch.setenv("AGENT_WORKER_LOG", str(log))
    agent = agent_worker.slow_agent
    async with Runtime.open(
        _url(tmp_path), models=agent_worker.gateway("slow"), tools=agent.toolbox, recover="list"
    ) as rt:
        result = await agent.resume(rt, agent_worker.RUN_ID, None)
    after = log.read_text().splitlines()[len(before) :]
    assert [e.split()[:2] for e in after] == [["tool", "slow_report"], ["model", "2"]]
    key_before = next(e.split()[2] for e in before if "slow_report" in e)
    assert after[0].split()[2] == key_before  # the same idempotency key: exactly once downstream
    assert result.text == 'done: {"order":"A-17","amount":250} | report ready'


# -- handoffs, agents as tools ----------------------------------------------------------


async def test_a_handoff_runs_the_other_agents_instructions_and_tools(tmp_path: Path) -> None:
    @tool
    def faq(topic: str) -> str:
        """Look up the FAQ."""
        return "see the FAQ"

    @tool
    def refund_status(order: str) -> str:
        """Where a refund stands."""
        return f"{order}: refund sent"

    def script(request: ModelRequest) -> Any:
        system = request.messages[0].text
        if system.startswith("Triage"):
            return [ToolCall("h1", "transfer_to_billing", {})]
        if request.messages[-1].name == "transfer_to_billing":
            return [ToolCall("b1", "refund_status", {"order": "A-17"})]
        return "Billing here: " + request.messages[-1].text

    model = ScriptedModel(script)
    billing = Agent("billing", "fast", "Billing: refunds.", tools=[refund_status],
                    description="the billing desk")  # fmt: skip
    triage = Agent("triage", "fast", "Triage the question.", tools=[faq], handoffs=[billing])
    async with _open(tmp_path, triage, fast=model) as rt:
        result = await triage.run(rt, "where is my refund?")
    assert [sorted(t.name for t in c.tools) for c in model.calls] == [
        ["faq", "transfer_to_billing"], ["refund_status"], ["refund_status"]
    ]  # fmt: skip
    assert [c.messages[0].text for c in model.calls][1:] == ["Billing: refunds."] * 2
    assert "the billing desk" in model.calls[0].tools[1].description
    assert result.agent == "billing" and result.text == "Billing here: A-17: refund sent"


async def test_an_agent_used_as_a_tool_is_a_child_run_with_its_own_turn_limit(
    tmp_path: Path,
) -> None:
    @tool
    def search(query: str) -> str:
        """Search the web."""
        return f"results for {query}"

    def research(request: ModelRequest) -> Any:
        question = request.messages[1].text
        if question == "loop forever":
            return [ToolCall(f"s{_results(request)}", "search", {"query": "again"})]
        if _results(request) == 0:
            return [ToolCall("s1", "search", {"query": question})]
        return "found: " + request.messages[-1].text

    def write(request: ModelRequest) -> Any:
        if _results(request) == 0:
            return [ToolCall("w1", "researcher", {"input": "mainspring"}),
                    ToolCall("w2", "looper", {"input": "loop forever"})]  # fmt: skip
        return " / ".join(_tool_texts(request))

    researcher = Agent("researcher", "research", "Research.", tools=[search], max_turns=5)
    writer = Agent(
        "writer", "write", "Write.",
        tools=[researcher.as_tool(), researcher.as_tool("looper", max_turns=2)],
    )  # fmt: skip
    gateway = Gateway({"research": ScriptedModel(research), "write": ScriptedModel(write)})
    async with Runtime.open(_url(tmp_path), models=gateway, tools=writer.toolbox) as rt:
        result = await writer.run(rt, "write about mainspring")
        children = [r for r in await rt.list_runs() if r.parent_run_id == result.run_id]
    first, second = result.text.split(" / ")
    assert first == "found: results for mainspring"
    assert second.startswith("error: agent 'researcher' reached its limit of 2 model turns")
    assert len(children) == 2 and all(c.status is RunStatus.FINISHED for c in children)
    assert {c.graph for c in children} == {"agent:researcher"}


# -- structured output, limits, threads -------------------------------------------------


class Verdict(BaseModel):
    intent: str
    confidence: float


async def test_structured_output_with_and_without_tools(tmp_path: Path) -> None:
    @tool
    def history(customer: str) -> str:
        """A customer's history."""
        return "two refunds this year"

    def classify(request: ModelRequest) -> Any:
        return {"intent": "refund", "confidence": 0.9}

    def with_tools(request: ModelRequest) -> Any:
        if request.output is not None:  # the final call, asked with output=
            return {"intent": "refund", "confidence": 0.7}
        if _results(request) == 0:
            return [ToolCall("h1", "history", {"customer": "ada"})]
        return "Probably a refund, fairly sure."  # prose: asked again with output=

    plain_model, tools_model = ScriptedModel(classify), ScriptedModel(with_tools)
    plain = Agent("classifier", "plain", "Classify.", output_type=Verdict)
    tooled = Agent("investigator", "tooled", "Classify.", tools=[history], output_type=Verdict)
    gateway = Gateway({"plain": plain_model, "tooled": tools_model})
    async with Runtime.open(_url(tmp_path), models=gateway, tools=tooled.toolbox) as rt:
        first = await plain.run(rt, "I want my money back")
        second = await tooled.run(rt, "I want my money back")
    assert first.output == Verdict(intent="refund", confidence=0.9) and first.turns == 1
    assert plain_model.calls[0].output is not None and not plain_model.calls[0].tools
    assert second.output == Verdict(intent="refund", confidence=0.7)
    last = tools_model.calls[-1]
    assert last.output is not None and not last.tools and len(tools_model.calls) == 3
    assert second.messages[-1].text == '{"intent":"refund","confidence":0.7}'  # replaces the prose


async def test_max_turns_stops_a_looping_agent_with_a_clear_error(tmp_path: Path) -> None:
    pings: list[int] = []

    @tool
    def ping() -> str:
        """Ping."""
        pings.append(1)
        return "pong"

    model = ScriptedModel(lambda r: [ToolCall(f"p{_results(r)}", "ping", {})])
    agent = Agent("looper", "fast", "Loop.", tools=[ping], max_turns=3)
    async with _open(tmp_path, agent, fast=model) as rt:
        with pytest.raises(MaxTurnsExceeded, match="reached its limit of 3 model turns"):
            await agent.run(rt, "go")
        (record,) = await rt.list_runs()
    assert len(model.calls) == 3 and len(pings) == 3 and record.status is RunStatus.FAILED


async def test_a_thread_continues_its_conversation(tmp_path: Path) -> None:
    def script(request: ModelRequest) -> Any:
        said = [m.text for m in request.messages if m.role == "user"]
        names = [s.removeprefix("I am ") for s in said if s.startswith("I am ")]
        if said[-1].startswith("I am "):
            return f"Hello {names[-1]}"
        return f"You are {names[-1]}" if names else "I do not know you"

    model = ScriptedModel(script)
    agent = Agent("host", "fast", "Be polite.")
    async with Runtime.open(_url(tmp_path), models=Gateway({"fast": model})) as rt:
        await agent.run(rt, "I am Ada", thread="t1")
        again = await agent.run(rt, "Who am I?", thread="t1")
        other = await agent.run(rt, "Who am I?", thread="t2")
        history = await agent.history(rt, "t1")
    assert again.text == "You are Ada" and other.text == "I do not know you"
    assert [m.role for m in model.calls[1].messages] == ["system", "user", "assistant", "user"]
    assert [m.text for m in history] == ["I am Ada", "Hello Ada", "Who am I?", "You are Ada"]


async def test_a_thread_with_a_parked_run_must_be_resumed_first(tmp_path: Path) -> None:
    agent, model, _ = _approval_setup()
    async with _open(tmp_path, agent, fast=model) as rt:
        parked = await agent.run(rt, "pay ada", thread="t1")
        with pytest.raises(AgentError, match="resume it"):
            await agent.run(rt, "and bob", thread="t1")
        await agent.resume(rt, parked.run_id, True)
        later = await agent.run(rt, "thanks", thread="t1")
    assert [m.role for m in later.messages][:4] == ["user", "assistant", "tool", "assistant"]


# -- the graph it is --------------------------------------------------------------------


async def test_streaming_an_agent_gives_model_deltas(tmp_path: Path) -> None:
    model = ScriptedModel(["a streamed answer of several words"], latency=0.2, chunk=5)
    agent = Agent("talker", "fast", "Talk.")
    async with Runtime.open(_url(tmp_path), models=Gateway({"fast": model})) as rt:
        handle = await agent.start(rt, "hi")
        kinds = [e.kind.value async for e in handle.events()]
    assert "model_delta" in kinds and kinds[-1] == "finished"


class Desk(TypedDict, total=False):
    question: str
    answer: str
    log: Annotated[list[str], append]


async def test_an_agent_is_a_subgraph_of_a_larger_graph(tmp_path: Path) -> None:
    @tool
    def clock() -> str:
        """The time."""
        return "noon"

    model = ScriptedModel(lambda r: [ToolCall("t", "clock", {})] if _results(r) == 0 else "at noon")
    agent = Agent("timekeeper", "fast", "Tell the time.", tools=[clock])
    g = Graph(Desk)
    g.node("ask", agent.graph, input=lambda s: {"messages": message_dicts(s["question"])},
           output=lambda out: {"answer": final_text(out["messages"])})  # fmt: skip
    g.node("note", lambda s: {"log": [f"answered: {s['answer']}"]})
    g.edge(START, "ask")
    g.edge("ask", "note")
    g.edge("note", END)
    async with _open(tmp_path, agent, fast=model) as rt:
        state = await rt.run(g.compile(), {"question": "what time is it?"})
    assert state["log"] == ["answered: at noon"]


def test_run_sync_through_the_sync_facade(tmp_path: Path) -> None:
    agent = Agent("echo", "fast", "Echo.")
    gateway = Gateway({"fast": ScriptedModel(lambda r: "echo: " + r.messages[-1].text)})
    with SyncRuntime.open(_url(tmp_path), models=gateway) as rt:
        result = agent.run_sync(rt, "hello", thread="s")
    assert isinstance(result, AgentResult) and result.text == "echo: hello"


def test_bad_agents_are_refused_with_what_to_fix() -> None:
    with pytest.raises(AgentError, match="agent name"):
        Agent("no spaces", "fast")
    with pytest.raises(AgentError, match="output_type="):
        Agent("a", "fast", model_options={"output": Verdict})
    a = Agent("a", "fast")
    a.tools.append(a.as_tool())
    with pytest.raises(AgentError, match="uses itself as a tool"):
        _ = a.graph


async def test_a_tool_whose_fallback_is_a_person_parks_the_agent(tmp_path: Path) -> None:
    """A tool whose rate limit refuses falls back to AskHuman: the agent parks with the
    call's arguments, and the person's answer stands in for the tool's result."""
    from mainspring.tools.fallback import AskHuman

    @tool(rate=0.001, burst=1, limit_wait=0.0, fallback=AskHuman("the stock service is saturated"))
    def stock(sku: str) -> int:
        """Units in stock."""
        return 7

    def script(request: ModelRequest) -> Any:
        results = [m for m in request.messages if m.role == "tool"]
        if len(results) < 2:
            return [ToolCall(f"c{len(results)}", "stock", {"sku": "KETTLE-2"})]
        return f"answers: {results[0].text} / {results[1].text}"

    agent = Agent("stocker", "fast", "Check stock twice.", tools=[stock])
    async with _open(tmp_path, agent, fast=ScriptedModel(script)) as rt:
        parked = await agent.run(rt, "How many kettles?")
        assert parked.status is RunStatus.INTERRUPTED
        asked = parked.approvals[0].payload["needs_human"]
        assert (asked["tool"], asked["args"]) == ("stock", {"sku": "KETTLE-2"})
        assert asked["reason"].startswith("the stock service is saturated (tool 'stock': its rate")
        done = await agent.resume(rt, parked.run_id, "5 (counted by hand)")
    assert done.text == "answers: 7 / 5 (counted by hand)"
