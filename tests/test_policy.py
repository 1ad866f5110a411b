"""Policy as code on a real Runtime (memory, SQLite and PostgreSQL stores): Python and Cedar rules
deciding allow, deny, approve and rewrite for tools and agents; the decision record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.agents import Agent
from mainspring.errors import EffectDeniedError, RunStateError
from mainspring.events import EffectDecided, EffectStarted, Event
from mainspring.guard.policy import Policy, Rules, approve, deny, rewrite
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.tools import Toolbox, tool
from tests.conftest import postgres_schema_url

pytestmark = pytest.mark.anyio

CALLED: list[tuple[str, dict[str, Any]]] = []


@tool
def lookup(q: str, ssn: str = "") -> str:
    """Look a customer up."""
    CALLED.append(("lookup", {"q": q, "ssn": ssn}))
    return f"found {q} {ssn}".strip()


@tool
def refund(amount: int) -> str:
    """Refund an amount."""
    CALLED.append(("refund", {"amount": amount}))
    return f"refunded {amount}"


@tool
def mail(to: str) -> str:
    """Send a mail."""
    CALLED.append(("mail", {"to": to}))
    return f"mailed {to}"


@tool(dangerous=True)
def wipe(target: str) -> str:
    """Delete everything at a target."""
    CALLED.append(("wipe", {"target": target}))
    return f"wiped {target}"


def python_rules() -> Rules:
    rules = Rules()

    @rules.rule("big-refunds", tools=["refund"])
    def big(req: Any) -> Any:
        return deny("refunds over 100 are not allowed") if req.args["amount"] > 100 else None

    @rules.rule("mail-needs-ok", tools=["mail"])
    def ask(req: Any) -> Any:
        return approve("mail goes to a person first")

    @rules.rule("mask-ssn", tools=["lookup"])
    def mask(req: Any) -> Any:
        return rewrite(redact=["ssn"], reason="ssn masked") if req.args.get("ssn") else None

    return rules


CEDAR = """
@id("big-refunds") @reason("refunds over 100 are not allowed")
forbid (principal, action == Action::"tool:refund", resource) when { context.args.amount > 100 };
@id("mail-needs-ok") @approve("mail goes to a person first")
forbid (principal, action == Action::"tool:mail", resource);
@id("mask-ssn") @redact("ssn")
permit (principal, action == Action::"tool:lookup", resource) when { context.args has ssn && context.args.ssn != "" };
@id("baseline") permit (principal, action, resource);
"""


def make_policy(engine: str, **options: Any) -> Policy:
    if engine == "python":
        return Policy(rules=[python_rules()], **options)
    return Policy(cedar=[CEDAR], **options)


class S(TypedDict, total=False):
    tool: str
    args: dict[str, Any]
    result: Any
    note: str


def _graph() -> Any:
    g = Graph(S, name="policy-tools")

    @g.node
    async def act(s: S, ctx: Context) -> S:
        try:
            return {"result": await ctx.tool(s["tool"], **s["args"])}
        except EffectDeniedError as exc:
            return {"note": f"denied: {exc.reason}"}

    g.edge(START, "act")
    g.edge("act", END)
    return g.compile()


APP = _graph()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def url(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[str]:
    if request.param == "postgres":
        async with postgres_schema_url() as pg:
            yield pg
    else:
        yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'p.db'}"


def _box() -> Toolbox:
    return Toolbox([lookup, refund, mail, wipe])


def _of(events: list[Event], kind: type) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, kind)]


async def _run(rt: Runtime, name: str, meta: dict[str, Any] | None = None, **args: Any) -> Any:
    handle = await rt.start(APP, {"tool": name, "args": args}, metadata=meta or {})
    return handle, await handle.wait()


@pytest.mark.parametrize("engine", ["python", "cedar"])
async def test_rules_allow_deny_rewrite_and_record_the_version(engine: str, url: str) -> None:
    CALLED.clear()
    policy = make_policy(engine)
    async with Runtime(_store(url), gates=[policy], tools=_box(), graphs=[APP]) as rt:
        h, out = await _run(rt, "refund", amount=500)
        assert out.status is RunStatus.FINISHED and not CALLED
        note = (await rt.handle(h.run_id).result())["note"]
        assert "refunds over 100 are not allowed" in note and "'big-refunds'" in note
        assert policy.version in note
        events = await rt.events(h.run_id)
        [decided] = _of(events, EffectDecided)
        assert decided.decision == "deny" and decided.hook == "policy"
        assert decided.basis == {"policy": "policy", "version": policy.version,
                                 "rule": "big-refunds", "decision": "deny"}  # fmt: skip

        h, _ = await _run(rt, "refund", amount=5)
        assert CALLED == [("refund", {"amount": 5})]
        [started] = _of(await rt.events(h.run_id), EffectStarted)
        assert started.basis["policy"]["version"] == policy.version  # an allow, on its start
        assert started.basis["policy"]["decision"] == "allow"
        assert not _of(await rt.events(h.run_id), EffectDecided)  # no event of its own

        h, _ = await _run(rt, "lookup", q="ada", ssn="123-45-6789")
        assert CALLED[-1] == ("lookup", {"q": "ada", "ssn": "[redacted]"})
        events = await rt.events(h.run_id)
        [decided] = _of(events, EffectDecided)
        assert decided.decision == "rewrite" and decided.basis["rule"] == "mask-ssn"
        assert _of(events, EffectStarted)[0].args == {"q": "ada", "ssn": "[redacted]"}


@pytest.mark.parametrize("engine", ["python", "cedar"])
async def test_approval_through_the_policy_approve_reject_edit(engine: str, url: str) -> None:
    CALLED.clear()
    async with Runtime(_store(url), gates=[make_policy(engine)], tools=_box(), graphs=[APP]) as rt:
        h, parked = await _run(rt, "mail", to="ada@example.com")
        assert parked.status is RunStatus.INTERRUPTED and not CALLED
        ask = parked.interrupts[0].payload
        assert ask["approve"]["name"] == "tool:mail" and ask["approve"]["args"] == {
            "to": "ada@example.com"
        }
        assert ask["data"]["rule"] == "mail-needs-ok" and ask["data"]["reason"]
        await rt.resume(h.run_id, True)
        assert (await rt.handle(h.run_id).result())["result"] == "mailed ada@example.com"

        h, _ = await _run(rt, "mail", to="bob@example.com")
        await rt.resume(h.run_id, {"approve": False, "reason": "not today"})
        assert (await rt.handle(h.run_id).result())["note"] == "denied: not today"

        h, _ = await _run(rt, "mail", to="eve@example.com")
        await rt.resume(h.run_id, {"args": {"to": "ops@example.com"}})
        assert (await rt.handle(h.run_id).result())["result"] == "mailed ops@example.com"
        decisions = [d.decision for d in _of(await rt.events(h.run_id), EffectDecided)]
        assert decisions == ["approve", "edited"]
    assert [c[1]["to"] for c in CALLED] == ["ada@example.com", "ops@example.com"]


async def test_an_approval_answer_of_no_known_shape_is_refused_at_resume(url: str) -> None:
    """An answer that is not True, False, None or a dict of the documented keys (an edit
    whose "args" is no dict, say) would be read as a refusal: resume says what to send,
    records nothing, and the run still waits for a proper answer."""
    CALLED.clear()
    async with Runtime(
        _store(url), gates=[make_policy("python")], tools=_box(), graphs=[APP]
    ) as rt:
        h, parked = await _run(rt, "mail", to="ada@example.com")
        assert parked.status is RunStatus.INTERRUPTED
        for bad, says in [("yes", "cannot be 'yes'"), ({"args": "ops@example.com"}, '"args" must'),
                          ({"args": ["ops"]}, '"args" must'), ({"approve": "yes"}, '"approve" must')]:  # fmt: skip
            with pytest.raises(RunStateError, match="resume\\(run, True\\)") as caught:
                await rt.resume(h.run_id, bad)
            assert says in str(caught.value) and "'tool:mail'" in str(caught.value)
        assert (await rt.handle(h.run_id).wait()).status is RunStatus.INTERRUPTED and not CALLED
        await rt.resume(h.run_id, {"args": {"to": "ops@example.com"}})
        assert (await rt.handle(h.run_id).result())["result"] == "mailed ops@example.com"
    assert CALLED == [("mail", {"to": "ops@example.com"})]


async def test_a_resume_meets_the_recorded_approval_not_the_policy_again(tmp_path: Path) -> None:
    asked: list[str] = []
    rules = Rules()

    @rules.rule("ask", tools=["mail"])
    def ask(req: Any) -> Any:
        asked.append(req.name)
        return approve("ask first")

    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with Runtime.open(url, gates=[Policy(rules=[rules])], tools=_box(), graphs=[APP]) as rt:
        h, _ = await _run(rt, "mail", to="a@example.com")
    # another process, where the policy would now deny: the person's approval stands
    strict = Rules()
    strict.add(lambda req: deny("never"), id="never")
    async with Runtime.open(url, gates=[Policy(rules=[strict])], tools=_box(), graphs=[APP]) as rt:
        await rt.resume(h.run_id, True)
        assert (await rt.handle(h.run_id).result())["result"] == "mailed a@example.com"
    assert asked == ["tool:mail"]


@tool(needs_approval=True)
def pay(amount: int) -> str:
    """Pay an amount (a person approves every payment)."""
    return f"paid {amount}"


async def test_a_policy_allow_before_the_tools_approval_is_kept_on_its_record(url: str) -> None:
    """The policy allows the call, the toolbox's approval hook (after it) asks a person:
    the approval's effect_decided record keeps the policy's grounds (version and rule)."""
    policy = Policy(rules=[python_rules()], name="gov")
    box = Toolbox([pay])
    async with Runtime(_store(url), gates=[policy], tools=box, graphs=[APP]) as rt:
        h, out = await _run(rt, "pay", amount=5)
        assert out.status is RunStatus.INTERRUPTED
        await rt.resume(h.run_id, True)
        assert (await rt.handle(h.run_id).result())["result"] == "paid 5"
        decided = _of(await rt.events(h.run_id), EffectDecided)
    asked = next(d for d in decided if d.decision == "approve")
    assert asked.hook == "tool-approvals"
    assert asked.basis["allowed"]["gov"]["version"] == policy.version
    assert asked.basis["allowed"]["gov"]["decision"] == "allow"


async def test_a_persons_edit_is_judged_by_every_hook_again(url: str) -> None:
    """A person who edits a call's arguments at an approval cannot take it past the policy:
    the policy's deny rules judge the edited arguments (the asking rule's too), and an
    approval the same hook asks again for the edited call is the person's own."""
    CALLED.clear()
    rules = Rules()

    @rules.rule("refund-limits", tools=["refund"])
    def limits(req: Any) -> Any:
        if req.args["amount"] > 1000:
            return deny("refunds over 1000 are not allowed")
        return approve("refunds over 100 need a person") if req.args["amount"] > 100 else None

    @rules.rule("no-evil-mail", tools=["pay_to"])
    def no_evil(req: Any) -> Any:
        return deny("no payments to evil") if req.args["to"] == "evil" else None

    policy = Policy(rules=[rules], name="gov")
    box = Toolbox([refund, pay_to])
    async with Runtime(_store(url), gates=[policy], tools=box, graphs=[APP]) as rt:
        h, out = await _run(rt, "refund", amount=500)
        assert out.status is RunStatus.INTERRUPTED
        await rt.resume(h.run_id, {"args": {"amount": 999_999}})
        note = (await rt.handle(h.run_id).result())["note"]
        assert "refunds over 1000 are not allowed" in note and not CALLED

        h, out = await _run(rt, "refund", amount=500)  # edited to another amount to ask about
        await rt.resume(h.run_id, {"args": {"amount": 300}})
        assert (await rt.handle(h.run_id).result())["result"] == "refunded 300"
        started = _of(await rt.events(h.run_id), EffectStarted)[-1]
        assert started.args == {"amount": 300}

        h, out = await _run(rt, "pay_to", to="ann")  # the tool's own approval, then an edit
        assert out.status is RunStatus.INTERRUPTED
        await rt.resume(h.run_id, {"args": {"to": "evil"}})
        note = (await rt.handle(h.run_id).result())["note"]
        assert "no payments to evil" in note
    assert CALLED == [("refund", {"amount": 300})]


@tool(needs_approval=True)
def pay_to(to: str) -> str:
    """Pay someone (a person approves every payment)."""
    CALLED.append(("pay_to", {"to": to}))
    return f"paid {to}"


async def test_dangerous_tools_are_denied_unless_a_rule_names_them(url: str) -> None:
    CALLED.clear()
    async with Runtime(_store(url), tools=_box(), graphs=[APP]) as rt:  # no policy at all
        h, _ = await _run(rt, "wipe", target="/")
        assert "marked dangerous" in (await rt.handle(h.run_id).result())["note"]
    broad = Policy(cedar=["permit (principal, action, resource);"])
    async with Runtime(_store(url), gates=[broad], tools=_box(), graphs=[APP]) as rt:
        h, _ = await _run(rt, "wipe", target="/")
        note = (await rt.handle(h.run_id).result())["note"]
        assert (
            "marked dangerous" in note and "'dangerous-tools'" in note
        )  # a broad permit is not enough
    named = Policy(cedar=['@id("ops-may-wipe") permit (principal in Tenant::"ops", '
                          'action == Action::"tool:wipe", resource);'])  # fmt: skip
    async with Runtime(_store(url), gates=[named], tools=_box(), graphs=[APP]) as rt:
        h, _ = await _run(rt, "wipe", {"tenant": "ops"}, target="/tmp/x")
        assert (await rt.handle(h.run_id).result())["result"] == "wiped /tmp/x"
        h, _ = await _run(rt, "wipe", {"tenant": "sales"}, target="/tmp/x")
        assert "marked dangerous" in (await rt.handle(h.run_id).result())["note"]
    assert CALLED == [("wipe", {"target": "/tmp/x"})]


async def test_tenant_a_rules_do_not_touch_tenant_b(url: str) -> None:
    CALLED.clear()
    a = Rules()
    a.add(lambda req: deny("tenant a refunds nothing"), id="a-no-refunds", tools=["refund"])
    policy = Policy(rules=[python_rules()], tenants={"a": a})
    async with Runtime(_store(url), gates=[policy], tools=_box(), graphs=[APP]) as rt:
        ha, _ = await _run(rt, "refund", {"tenant": "a"}, amount=5)
        hb, _ = await _run(rt, "refund", {"tenant": "b"}, amount=5)
        assert "tenant a refunds nothing" in (await rt.handle(ha.run_id).result())["note"]
        assert (await rt.handle(hb.run_id).result())["result"] == "refunded 5"
        [da] = _of(await rt.events(ha.run_id), EffectDecided)
        [sb] = _of(await rt.events(hb.run_id), EffectStarted)
    assert da.basis["version"].startswith(policy.version + "+a:")
    assert sb.basis["policy"]["version"] == policy.version  # b decided by the global layer only


async def test_the_default_tenants_rules_decide_its_runs(url: str) -> None:
    """A run started without a tenant (or through ``rt.tenant("")``) belongs to the default
    tenant ``""``, and ``Policy(tenants={"": ...})`` decides for it."""
    CALLED.clear()
    strict = Rules()
    strict.add(lambda req: deny("default refunds nothing"), id="no-refunds", tools=["refund"])
    policy = Policy(rules=[python_rules()], tenants={"": strict})
    async with Runtime(_store(url), gates=[policy], tools=_box(), graphs=[APP]) as rt:
        h0, _ = await _run(rt, "refund", None, amount=5)
        scoped = await rt.tenant("").run_outcome(APP, {"tool": "refund", "args": {"amount": 5}})
        ha, _ = await _run(rt, "refund", {"tenant": "a"}, amount=5)
        assert "default refunds nothing" in (await rt.handle(h0.run_id).result())["note"]
        assert "default refunds nothing" in scoped.state["note"]
        assert (await rt.handle(ha.run_id).result())["result"] == "refunded 5"
        [d0] = _of(await rt.events(h0.run_id), EffectDecided)
    assert d0.basis["rule"] == "no-refunds" and d0.basis["version"].startswith(
        policy.version + "+:"
    )
    assert CALLED == [("refund", {"amount": 5})]


async def test_an_agent_model_reads_the_denial_reason_and_rule(tmp_path: Path) -> None:
    CALLED.clear()

    def script(request: ModelRequest) -> Any:
        if not any(m.role == "tool" for m in request.messages):
            return [
                ToolCall("c1", "refund", {"amount": 900}),
                ToolCall("c2", "wipe", {"target": "/"}),
            ]
        return " | ".join(m.text for m in request.messages if m.role == "tool")

    model = ScriptedModel(script)
    agent = Agent("clerk", "fast", "Refund.", tools=[refund, wipe])
    policy = make_policy("cedar")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    async with Runtime.open(url, gates=[policy], models=Gateway({"fast": model}),
                            tools=agent.toolbox) as rt:  # fmt: skip
        result = await agent.run(rt, "refund 900 and wipe")
        events = await rt.events(result.run_id)
    assert not CALLED
    first, second = result.text.split(" | ")
    assert first.startswith("error: the call of 'refund' was not made: refunds over 100")
    assert "'big-refunds'" in first and policy.version in first
    assert "marked dangerous" in second and "'dangerous-tools'" in second
    models = [s for s in _of(events, EffectStarted) if s.effect_kind == "model"]
    assert models and all(s.basis["policy"]["rule"] == "baseline" for s in models)


def _store(url: str) -> Any:
    from mainspring.store import store_from_url

    return store_from_url(url)


@pytest.mark.parametrize("engine", ["python", "cedar"])
async def test_an_agent_meets_all_four_decisions(engine: str, tmp_path: Path) -> None:
    CALLED.clear()

    def script(request: ModelRequest) -> Any:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done == 0:
            return [ToolCall("c1", "refund", {"amount": 7}), ToolCall("c2", "refund", {"amount": 700}),
                    ToolCall("c3", "lookup", {"q": "ada", "ssn": "123"}),
                    ToolCall("c4", "mail", {"to": "ada@example.com"})]  # fmt: skip
        return " | ".join(m.text for m in request.messages if m.role == "tool")

    agent = Agent("clerk", "fast", "Help.", tools=[refund, lookup, mail])
    url = f"sqlite:///{tmp_path / 'four.db'}"
    gateway = Gateway({"fast": ScriptedModel(script)})
    async with Runtime.open(url, gates=[make_policy(engine)], models=gateway,
                            tools=agent.toolbox) as rt:  # fmt: skip
        parked = await agent.run(rt, "do it all")
        assert parked.parked and [a.payload["approve"]["name"] for a in parked.approvals] == [
            "tool:mail"
        ]
        done = await agent.resume(rt, parked.run_id, True)
    allowed, denied, rewritten, approved = done.text.split(" | ")
    assert allowed == "refunded 7" and "refunds over 100" in denied and "'big-refunds'" in denied
    assert rewritten == "found ada [redacted]" and approved == "mailed ada@example.com"
    assert sorted(c[0] for c in CALLED) == ["lookup", "mail", "refund"]
