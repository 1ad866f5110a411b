"""Policies from files: versions, hot reload (a broken edit keeps the old version), fail
closed, history across processes, spend, and ``mainspring policy test`` / ``check``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import pytest
from typer.testing import CliRunner

from mainspring import Runtime
from mainspring.cli import app as cli
from mainspring.engine.gate import Allow, Approve, Deny, Effect, Rewrite
from mainspring.events import EffectDecided, EffectStarted
from mainspring.guard.policy import Policy, PolicyError, Rules, allow, deny
from mainspring.models.budget_ledger import Entry
from mainspring.models.budget_ledger_memory import MemoryLedger
from tests.test_policy import APP, CALLED, _box, _of, _run

pytestmark = pytest.mark.anyio

PY_RULES = """
from mainspring.guard.policy import Rules, deny

rules = Rules()

@rules.rule("no-mail-to-competitors", tools=["mail"])
def competitors(req):
    if req.args.get("to", "").endswith("@rival.example"):
        return deny("no mail to competitors")
"""


def _effect(
    name: str, tenant: str | None = None, run: str = "r1", key: str = "k", **args: Any
) -> Effect:
    meta = {} if tenant is None else {"tenant": tenant}
    kind = name.partition(":")[0]
    return Effect(kind, name, args, key, run, "act", 1, 0, 0, 1, meta, graph="g")


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time_ns() + 1_000_000_000 * (1 + len(text) % 7)
    os.utime(path, ns=(stamp, stamp))  # a later mtime even within one clock tick


async def test_files_load_version_and_hot_reload_keeping_a_good_version(tmp_path: Path) -> None:
    (tmp_path / "mail.py").write_text(PY_RULES)
    _write(tmp_path / "base.cedar", "permit (principal, action, resource);")
    policy = Policy(tmp_path, reload_every=0)
    first = policy.version
    assert isinstance(await policy.before(_effect("tool:refund", amount=5)), Allow)
    denied = await policy.before(_effect("tool:mail", to="x@rival.example"))
    assert isinstance(denied, Deny) and "no mail to competitors" in denied.reason

    _write(tmp_path / "base.cedar", '@id("no-refunds") forbid (principal, action == Action::"tool:refund", resource);\n'
                                    'permit (principal, action, resource);')  # fmt: skip
    refused = await policy.before(_effect("tool:refund", amount=5))
    assert isinstance(refused, Deny) and refused.basis is not None
    assert refused.basis["rule"] == "no-refunds" and policy.version != first
    second = policy.version

    _write(tmp_path / "base.cedar", "forbid (principal, action resource);")  # does not parse
    still = await policy.before(_effect("tool:refund", amount=5))
    assert isinstance(still, Deny) and policy.version == second  # the old version stands
    assert policy.reload_error is not None and "base.cedar" in policy.reload_error

    _write(tmp_path / "base.cedar", "permit (principal, action, resource);")
    assert isinstance(await policy.before(_effect("tool:refund", amount=5)), Allow)
    assert policy.status()["reload_error"] is None and policy.version == first  # content decides


async def test_a_running_runtime_picks_up_an_edit_and_journals_each_version(tmp_path: Path) -> None:
    CALLED.clear()
    rules = tmp_path / "rules"
    rules.mkdir()
    _write(rules / "p.cedar", "permit (principal, action, resource);")
    policy = Policy(rules, reload_every=0)
    async with Runtime.open("memory://", gates=[policy], tools=_box(), graphs=[APP]) as rt:
        h1, _ = await _run(rt, "refund", amount=5)
        old = policy.version
        _write(
            rules / "p.cedar",
            '@id("freeze") forbid (principal, action == Action::"tool:refund", resource);',
        )
        h2, _ = await _run(rt, "refund", amount=5)
        [s1] = _of(await rt.events(h1.run_id), EffectStarted)
        [d2] = _of(await rt.events(h2.run_id), EffectDecided)
    assert s1.basis["policy"]["version"] == old and d2.basis["version"] == policy.version != old
    assert d2.basis["rule"] == "freeze" and CALLED == [("refund", {"amount": 5})]


async def test_failing_rules_fail_closed_naming_the_rule() -> None:
    rules = Rules()

    @rules.rule("boom", tools=["a"])
    def boom(req: Any) -> Any:
        raise ValueError("the table is missing")

    garbage: Any = lambda req: "yes please"  # noqa: E731
    rules.add(garbage, id="garbage", tools=["b"])

    @rules.rule("slow", tools=["c"], timeout=0.01)
    async def slow(req: Any) -> Any:
        import anyio

        await anyio.sleep(1)
        return allow()

    @rules.rule("reads-history-undeclared", tools=["d"])
    def sneaky(req: Any) -> Any:
        return deny("x") if req.history else None

    policy = Policy(rules=[rules], cedar=[
        '@id("needs-q") forbid (principal, action == Action::"tool:e", resource) when { context.args.q == "x" };'
    ])  # fmt: skip
    for tool, expect in [("a", "it raised ValueError"), ("b", "returned a str; return None"),
                         ("c", "did not answer within 10 ms"), ("d", "did not declare it"),
                         ("e", "does not have the attribute")]:  # fmt: skip
        decision = await policy.before(_effect(f"tool:{tool}"))
        assert isinstance(decision, Deny), tool
        assert expect in decision.reason and "fail closed" in decision.reason, decision.reason
        # an exception's or a returned value's text may quote the arguments: not in the reason
        assert "table is missing" not in decision.reason and "yes please" not in decision.reason
    # an erroring permit never widens access: it just does not apply
    only = Policy(cedar=['@id("p") permit (principal, action, resource) when { context.args.q == "x" };'],
                  default="deny")  # fmt: skip
    assert isinstance(await only.before(_effect("tool:e")), Deny)


def test_bad_policy_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("raise RuntimeError('nope')\n")
    with pytest.raises(PolicyError, match=r"bad\.py: the module failed to load"):
        Policy(tmp_path)
    (tmp_path / "bad.py").unlink()
    (tmp_path / "x.cedar").write_text("permit (principal action, resource);")
    with pytest.raises(PolicyError, match=r"x\.cedar: the Cedar policies do not parse"):
        Policy(tmp_path)


class HS(TypedDict, total=False):
    out: list[Any]


async def test_history_counts_survive_a_new_process(tmp_path: Path) -> None:
    rules = Rules()

    @rules.rule("two-lookups", tools=["lookup"], history=True)
    def at_most_two(req: Any) -> Any:
        if req.history.get("tool:lookup", 0) >= 2:
            return deny("two lookups per run")

    @rules.rule("ask-mail", tools=["mail"])
    def ask(req: Any) -> Any:
        from mainspring.guard.policy import approve

        return approve("ok?")

    from mainspring import END, START, Context, Graph

    g = Graph(HS, name="history")

    @g.node
    async def act(s: Any, ctx: Context) -> Any:
        out = [await ctx.tool("lookup", q="a"), await ctx.tool("lookup", q="b")]
        await ctx.tool("mail", to="x@example.com")  # parks: a person is asked
        try:
            out.append(await ctx.tool("lookup", q="c"))
        except Exception as exc:
            out.append(f"denied: {exc}")
        return {"out": out}

    g.edge(START, "act")
    g.edge("act", END)
    app = g.compile()
    url = f"sqlite:///{tmp_path / 'h.db'}"
    async with Runtime.open(url, gates=[Policy(rules=[rules])], tools=_box(), graphs=[app]) as rt:
        handle = await rt.start(app, {})
        await handle.wait()
    async with Runtime.open(url, gates=[Policy(rules=[rules])], tools=_box(), graphs=[app]) as rt:
        await rt.resume(handle.run_id, True)
        out = (await rt.handle(handle.run_id).result())["out"]
    assert out[:2] == ["found a", "found b"] and "two lookups per run" in out[2]


async def test_rules_may_ask_the_budget_ledger_for_the_spend() -> None:
    ledger = MemoryLedger()
    await ledger.reserve([Entry("run:r1", "tokens", 5000.0)])
    rules = Rules()

    @rules.rule("costly-search", tools=["search"])
    async def costly(req: Any) -> Any:
        return deny("run spent too much") if await req.spent("tokens") > 1000 else None

    policy = Policy(rules=[rules], ledger=ledger, cedar=[
        '@id("cap") forbid (principal, action == Action::"tool:fetch", resource) when { context.spend.tokens > 4000 };'
    ])  # fmt: skip
    assert isinstance(await policy.before(_effect("tool:search", run="r1")), Deny)
    assert isinstance(await policy.before(_effect("tool:search", run="r2")), Allow)
    assert isinstance(await policy.before(_effect("tool:fetch", run="r1")), Deny)
    assert isinstance(await policy.before(_effect("tool:fetch", run="r2")), Allow)


CASES = {
    "cases": [
        {"name": "mail to rivals is denied", "tool": "mail", "args": {"to": "a@rival.example"},
         "expect": {"decision": "deny", "rule": "no-mail-to-competitors"}},
        {"name": "ops may wipe", "tool": "wipe", "dangerous": True, "tenant": "ops",
         "expect": "allow"},
        {"name": "sales may not wipe", "tool": "wipe", "dangerous": True, "tenant": "sales",
         "expect": {"decision": "deny", "rule": "dangerous-tools"}},
        {"name": "ssn is masked", "tool": "lookup", "args": {"q": "a", "ssn": "1"},
         "expect": {"decision": "rewrite", "args": {"q": "a", "ssn": "[redacted]"}}},
        {"name": "the third lookup asks", "tool": "lookup", "args": {"q": "a"},
         "history": {"tool:lookup": 2}, "expect": "approve"},
    ]
}  # fmt: skip

CEDAR_FILE = """
@id("ops-wipe") permit (principal in Tenant::"ops", action == Action::"tool:wipe", resource);
@id("mask") @redact("ssn") permit (principal, action == Action::"tool:lookup", resource) when { context.args has ssn };
@id("third-lookup") @approve("more than two lookups")
forbid (principal, action == Action::"tool:lookup", resource) when { context.history has "tool:lookup" && context.history["tool:lookup"] >= 2 };
"""


def test_policy_test_and_check_through_the_cli(tmp_path: Path) -> None:
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "mail.py").write_text(PY_RULES)
    (pdir / "main.cedar").write_text(CEDAR_FILE)
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES))
    runner = CliRunner()
    result = runner.invoke(cli, ["policy", "test", str(pdir), str(cases)])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS") == 5 and "5 passed, 0 failed" in result.output

    yaml_cases = tmp_path / "cases.yaml"
    yaml_cases.write_text("cases:\n  - name: mail to a friend is denied\n    tool: mail\n"
                          "    args: {to: friend@example.com}\n    expect: deny\n")  # fmt: skip
    failed = runner.invoke(cli, ["policy", "test", str(pdir), str(yaml_cases)])
    assert failed.exit_code == 1 and "FAIL  mail to a friend is denied" in failed.output

    checked = runner.invoke(cli, ["policy", "check", str(pdir)])
    assert checked.exit_code == 0 and "ok: 4 rules, version" in checked.output
    (pdir / "broken.cedar").write_text("permit (")
    broken = runner.invoke(cli, ["policy", "check", str(pdir)])
    assert broken.exit_code == 1 and "broken.cedar" in broken.output


async def test_tenant_directories_layer_on_the_global_policy(tmp_path: Path) -> None:
    (tmp_path / "base.cedar").write_text("permit (principal, action, resource);")
    acme = tmp_path / "tenants" / "acme"
    acme.mkdir(parents=True)
    (acme / "acme.cedar").write_text(
        '@id("acme-no-mail") forbid (principal, action == Action::"tool:mail", resource);'
    )
    policy = Policy(tmp_path)
    a = await policy.before(_effect("tool:mail", tenant="acme", to="x"))
    b = await policy.before(_effect("tool:mail", tenant="globex", to="x"))
    assert isinstance(a, Deny) and a.basis is not None and a.basis["rule"] == "acme-no-mail"
    assert isinstance(b, Allow) and policy.status()["tenants"]["acme"]["rules"] == 1
    assert not isinstance(b, Approve | Rewrite)


def test_the_quick_start_of_the_policy_docs_runs(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", doc, re.S)
    assert code is not None
    script = tmp_path / "quick.py"
    script.write_text(code.group(1))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "{'amount': 50, 'note': 'refunded 50 on A-1'}"
    assert lines[1] == "interrupted" and "refunded 500 on A-1" in lines[2]


async def test_each_rule_runs_once_per_effect_sync_and_async_mixed() -> None:
    ran: list[str] = []
    rules = Rules()
    rules.add(lambda req: ran.append("sync"), id="sync-rule", tools=["x"])

    @rules.rule("async-rule", tools=["x"])
    async def later(req: Any) -> Any:
        ran.append("async")
        return deny("no x") if req.args.get("bad") else None

    policy = Policy(rules=[rules])
    assert isinstance(await policy.before(_effect("tool:x")), Allow)
    assert isinstance(await policy.before(_effect("tool:x", bad=True)), Deny)
    assert ran == ["sync", "async", "sync", "async"]


async def test_each_rule_runs_exactly_once_per_effect() -> None:
    """A sync rule that returns an awaitable is not called again: its awaitable is awaited
    and the rules after it (in its set, in later sets, in the tenant's layer) run then."""
    calls: list[str] = []
    first, second, own = Rules(), Rules(), Rules()

    @first.rule("before", tools=["x"])
    def before(req: Any) -> Any:
        calls.append("before")

    @first.rule("lazy", tools=["x"])
    def lazy(req: Any) -> Any:
        calls.append("lazy")

        async def later() -> Any:
            return deny("decided later") if req.args.get("n") == 2 else None

        return later()

    @first.rule("after", tools=["x"])
    def after(req: Any) -> Any:
        calls.append("after")

    @second.rule("async", tools=["x"])
    async def in_async(req: Any) -> Any:
        calls.append("async")

    @own.rule("tenant", tools=["x"])
    def tenant(req: Any) -> Any:
        calls.append("tenant")

    policy = Policy(rules=[first, second], tenants={"t": own})
    order = ["before", "lazy", "after", "async", "tenant"]
    for n in (1, 2, 3):  # the first effect finds the awaitable; the next know it at once
        calls.clear()
        decision = await policy.before(_effect("tool:x", tenant="t", n=n))
        assert calls == order, (n, calls)
        if n == 2:
            assert isinstance(decision, Deny) and "decided later" in decision.reason
        else:
            assert not isinstance(decision, Deny)
    calls.clear()  # only the global layer for another tenant, each rule once too
    await policy.before(_effect("tool:x", tenant="u", n=1))
    assert calls == order[:-1]


async def test_a_sync_rules_awaitable_that_fails_or_is_slow_fails_closed() -> None:
    rules = Rules()
    runs: list[str] = []

    @rules.rule("raises-later", tools=["a"])
    def raises_later(req: Any) -> Any:
        runs.append("a")

        async def later() -> Any:
            raise KeyError(req.args["secret"])

        return later()

    @rules.rule("slow-later", tools=["b"], timeout=0.01)
    def slow_later(req: Any) -> Any:
        runs.append("b")
        import anyio

        async def later() -> Any:
            await anyio.sleep(1)

        return later()

    policy = Policy(rules=[rules])
    denied = await policy.before(_effect("tool:a", secret="hunter2-value"))
    assert isinstance(denied, Deny) and "it raised KeyError" in denied.reason
    assert "hunter2" not in denied.reason
    slow = await policy.before(_effect("tool:b"))
    assert isinstance(slow, Deny) and "did not answer within 10 ms" in slow.reason
    assert runs == ["a", "b"]


async def test_a_policy_for_the_default_tenant_applies_to_runs_without_one() -> None:
    """``tenants={"": ...}`` is the default tenant's layer (the tenant the stores give a run
    started without one): a deny written for it must not fail open."""
    strict = Rules()
    strict.add(lambda req: deny("the default tenant may not ping"), id="no-ping", tools=["ping"])
    policy = Policy(tenants={"": strict})
    for meta_tenant in (None, ""):
        decision = await policy.before(_effect("tool:ping", tenant=meta_tenant))
        assert isinstance(decision, Deny) and "may not ping" in decision.reason
        assert decision.basis is not None and decision.basis["rule"] == "no-ping"
    assert not isinstance(await policy.before(_effect("tool:ping", tenant="acme")), Deny)
