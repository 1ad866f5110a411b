"""The effect gate: every call a node makes passes the runtime's hooks, and every decision
other than "allow" is in the journal (issue 10, item 2)."""

from __future__ import annotations

import collections
import contextlib
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainspring import END, START, Context, EventKind, Graph, RunStatus, Runtime
from mainspring.engine.effects import EffectCall
from mainspring.engine.gate import (
    Answer,
    Approve,
    Deny,
    Effect,
    Gate,
    Outcome,
    Rewrite,
    capped,
)
from mainspring.errors import EffectDeniedError
from mainspring.events import (
    EffectDecided,
    EffectFinished,
    EffectStarted,
    decode,
    encode,
    plain_json,
)

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    amount: int
    receipt: Any
    note: str


CALLS: list[tuple[str, Any]] = []


def charge(amount: int, currency: str = "EUR", *, idempotency_key: str) -> dict[str, Any]:
    CALLS.append(("charge", amount))
    return {"charged": amount, "currency": currency, "key": idempotency_key}


def _app(name: str = "pay") -> Any:
    g = Graph(S, name=name)

    @g.node
    async def pay(s: S, ctx: Context) -> dict[str, Any]:
        try:
            receipt = await ctx.step("charge", charge, s["amount"])
        except EffectDeniedError as exc:
            return {"note": f"denied: {exc.reason}"}
        return {"receipt": receipt}

    g.edge(START, "pay")
    g.edge("pay", END)
    return g.compile()


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


def _decided(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.data.decision, e.data.hook) for e in events if isinstance(e.data, EffectDecided)]


class Limit:
    name = "limit"

    def before(self, effect: Effect) -> Deny | None:
        if effect.name == "charge" and effect.args["args"][0] > 100:
            return Deny("over the limit of 100")
        return None


async def test_a_denied_call_is_never_made_and_the_denial_is_journaled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    app = _app()
    async with Runtime.open(url, gates=[Limit()]) as rt:
        assert (await rt.run(app, {"amount": 500}, run_id="big"))["note"] == (
            "denied: over the limit of 100"
        )
        assert (await rt.run(app, {"amount": 5}, run_id="small"))["receipt"]["charged"] == 5
        events = await rt.events("big")
    assert CALLS == [("charge", 5)]
    assert _decided(events) == [("deny", "limit")]
    finished = next(e.data for e in events if isinstance(e.data, EffectFinished))
    assert finished.error is not None and finished.error.type == "EffectDeniedError"


async def test_a_resumed_run_meets_the_recorded_decision_not_the_hook(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    g = Graph(S, name="ask-after")

    @g.node
    async def pay(s: S, ctx: Context) -> dict[str, Any]:
        with contextlib.suppress(EffectDeniedError):
            await ctx.step("charge", charge, s["amount"])
        await ctx.interrupt("then park")
        return {"note": "done"}

    g.edge(START, "pay")
    g.edge("pay", END)
    app = g.compile()
    async with Runtime.open(url, gates=[Limit()]) as rt:
        await (await rt.start(app, {"amount": 500}, run_id="r")).wait()
    async with Runtime.open(url, graphs=[app]) as rt:  # no hooks in this process
        await rt.resume("r", True)
        assert (await rt.handle("r").result())["note"] == "done"
        events = await rt.events("r")
    assert CALLS == [], "the recorded denial held; the call was never made"
    assert _decided(events) == [("deny", "limit")]


class AskAboveFifty:
    name = "approvals"

    def before(self, effect: Effect) -> Approve | None:
        if effect.name == "charge" and effect.args["args"][0] > 50:
            return Approve("amounts above 50 need a person", payload={"team": "finance"})
        return None


@pytest.mark.parametrize(
    ("answer", "charged", "decisions"),
    [
        (True, [("charge", 80)], ["approve", "approved"]),
        (False, [], ["approve", "rejected"]),
        ({"approve": False, "reason": "no budget"}, [], ["approve", "rejected"]),
        ({"args": {"args": [40]}}, [("charge", 40)], ["approve", "edited"]),
    ],
)
async def test_approval_parks_the_run_and_the_answer_decides(
    tmp_path: Path, answer: Any, charged: list[tuple[str, int]], decisions: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    app = _app()
    async with Runtime.open(url, gates=[AskAboveFifty()]) as rt:
        handle = await rt.start(app, {"amount": 80}, run_id="a")
        outcome = await handle.wait()
        assert outcome.status is RunStatus.INTERRUPTED
        (pending,) = outcome.interrupts
        asked = pending.payload["approve"]
        assert (asked["name"], asked["args"], asked["hook"]) == (
            "charge",
            {"args": [80]},
            "approvals",
        )
        assert pending.payload["data"] == {"team": "finance"}
        assert CALLS == []
        await rt.resume("a", answer)
        final = await handle.result()
        events = await rt.events("a")
    assert charged == CALLS
    assert [d for d, _ in _decided(events)] == decisions
    if not charged:
        assert final["note"].startswith("denied:")


class Cache:
    name = "cache"

    def before(self, effect: Effect) -> Answer | None:
        return Answer({"charged": 0, "cached": True}, source="test cache")


class Defaults:
    name = "defaults"

    def before(self, effect: Effect) -> Rewrite | None:
        if "currency" not in effect.args:
            return Rewrite({**effect.args, "currency": "USD"}, reason="default currency")
        return None


async def test_an_answer_replaces_the_call_and_a_rewrite_changes_its_arguments() -> None:
    async with Runtime.open("memory://", gates=[Cache()]) as rt:
        out = await rt.run(_app(), {"amount": 7}, run_id="c")
        events = await rt.events("c")
    assert out["receipt"] == {"charged": 0, "cached": True} and CALLS == []
    assert _decided(events) == [("answer", "cache")]
    async with Runtime.open("memory://", gates=[Defaults()]) as rt:
        out = await rt.run(_app(), {"amount": 7}, run_id="d")
        events = await rt.events("d")
    assert out["receipt"]["currency"] == "USD" and CALLS == [("charge", 7)]
    started = next(e.data for e in events if isinstance(e.data, EffectStarted))
    assert started.args == {"args": [7], "currency": "USD"}
    assert _decided(events) == [("rewrite", "defaults")]


class Screen:
    name = "screen"

    async def after(self, effect: Effect, outcome: Outcome) -> Outcome | None:
        if isinstance(outcome.result, dict) and "key" in outcome.result:
            hidden = {k: v for k, v in outcome.result.items() if k != "key"}
            return Outcome(hidden, usage={"cost_usd": 0.01}, note="key screened out")
        return None


async def test_after_hooks_screen_and_account_and_both_are_journaled() -> None:
    async with Runtime.open("memory://", gates=[Screen()]) as rt:
        out = await rt.run(_app(), {"amount": 3}, run_id="s")
        events = await rt.events("s")
    assert "key" not in out["receipt"]
    finished = next(e.data for e in events if isinstance(e.data, EffectFinished))
    assert finished.usage == {"cost_usd": 0.01}
    decided = [e.data for e in events if isinstance(e.data, EffectDecided)]
    assert [(d.decision, d.hook, d.reason) for d in decided] == [
        ("after", "screen", "key screened out")
    ]


class Redact:
    def redact(self, effect: Effect, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {k: ("****" if k == "card" else v) for k, v in args.items()}


async def test_arguments_are_recorded_redacted_and_capped() -> None:
    g = Graph(S, name="args")

    @g.node
    async def call(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("login", lambda **kw: "ok", user="ann", password="hunter2", card="4242")
        await ctx.step("upload", lambda body: len(body), "x" * 100_000)
        return {}

    g.edge(START, "call")
    g.edge("call", END)
    async with Runtime.open("memory://", gates=[Redact()]) as rt:
        await rt.run(g.compile(), {}, run_id="r")
        started = [e.data for e in await rt.events("r") if isinstance(e.data, EffectStarted)]
    assert started[0].args == {"user": "ann", "password": "[redacted]", "card": "****"}
    assert started[1].args["truncated"] is True and started[1].args["bytes"] > 100_000


async def test_secret_arguments_are_masked_without_any_gate_hook() -> None:
    g = Graph(S, name="plain-args")

    @g.node
    async def call(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("login", lambda **kw: "ok", user="ann", password="hunter2", api_key="k")
        return {}

    g.edge(START, "call")
    g.edge("call", END)
    async with Runtime.open("memory://") as rt:  # no gates: the default masking still holds
        await rt.run(g.compile(), {}, run_id="r")
        started = [e.data for e in await rt.events("r") if isinstance(e.data, EffectStarted)]
    assert started[0].args == {"user": "ann", "password": "[redacted]", "api_key": "[redacted]"}


async def test_a_long_running_effect_is_journaled_before_it_is_called(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    url = f"sqlite:///{tmp_path / 'l.db'}"

    async def slow(rt: Runtime) -> str:
        # Another reader of the store sees the effect in flight.
        seen.append([str(e.kind) for e in await rt.store.read("long")])
        return "done"

    g = Graph(S, name="long")

    @g.node
    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.effect(EffectCall("tool", "crawl", slow, (rt,), long_running=True))
        return {}

    g.edge(START, "work")
    g.edge("work", END)
    async with Runtime.open(url) as rt:
        await rt.run(g.compile(), {}, run_id="long")
        started = [e.data for e in await rt.events("long") if isinstance(e.data, EffectStarted)]
    assert seen and seen[0][-1] == "effect_started"
    assert started[0].effect_kind == "tool"


async def test_a_hook_that_fails_fails_the_call_closed() -> None:
    class Broken:
        def before(self, effect: Effect) -> None:
            raise RuntimeError("the policy service is down")

    async with Runtime.open("memory://", gates=[Broken()]) as rt:
        with pytest.raises(Exception, match="the policy service is down"):
            await rt.run(_app(), {"amount": 1})
    assert CALLS == []
    with pytest.raises(TypeError, match="has none of before"):
        Runtime.open("memory://", gates=[object()])


async def test_every_kind_of_effect_passes_the_gate() -> None:
    kinds: list[str] = []

    class Watch:
        def before(self, effect: Effect) -> None:
            kinds.append(f"{effect.kind}:{effect.name}")

    g = Graph(S, name="kinds")

    @g.node
    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("plain", lambda: 1)
        await ctx.effect(EffectCall("model", "gpt", anyio.sleep, (0,)))
        return {}

    g.edge(START, "work")
    g.edge("work", END)
    async with Runtime.open("memory://", gates=[Watch()]) as rt:
        await rt.run(g.compile(), {})
    assert kinds == ["effect:plain", "model:gpt"]
    assert str(EventKind.EFFECT_DECIDED) == "effect_decided"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.tuples(inner)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=5), _json, max_size=4), st.integers(16, 4096))
def test_arguments_are_recorded_as_the_journal_gives_them_back_or_summed_up(
    args: dict[str, Any], cap: int
) -> None:
    """What ``capped`` records is JSON: the arguments as the journal gives them back when
    they fit the cap, else an account of their size with a preview."""
    recorded = capped(args, cap)
    encoded = encode(args)
    if not args:
        assert recorded == {}
    elif len(encoded) <= cap:
        assert recorded == decode(encoded)
        assert plain_json(recorded)
    else:
        assert recorded["truncated"] is True and recorded["bytes"] == len(encoded)
        assert len(recorded["preview"]) <= cap
    encode(recorded)


def test_arguments_that_are_not_json_are_recorded_by_repr() -> None:
    recorded = capped({"lock": threading.Lock()}, 8192)
    assert isinstance(recorded, str) and "lock" in recorded


def test_arguments_in_any_mapping_are_recorded_as_json() -> None:
    # A redact hook may hand back a ChainMap or a read-only view of the arguments.
    masked: collections.ChainMap[str, Any] = collections.ChainMap(
        {"password": "***"}, {"password": "x", "q": 1}
    )
    assert capped(masked, 8192) == {"password": "***", "q": 1}
    assert capped(types.MappingProxyType({"q": (1, 2)}), 8192) == {"q": [1, 2]}


def test_redact_text_hooks_shape_what_is_recorded_about_an_effect() -> None:
    """``Gate.recorded_text``/``recorded_basis``: each hook's ``redact_text`` in order (a
    hook may offer only that); a basis is copied, its strings redacted at any depth."""

    class Upper:
        def redact_text(self, effect: Effect, text: str) -> str:
            return text.replace("secret", "[s]")

    class Tagged:
        def redact_text(self, effect: Effect, text: str) -> str:
            return f"{effect.name}: {text}" if "[s]" in text else text

    effect = Effect("tool", "tool:x", {}, "k", "r", "n", 1, 0, 0, 1)
    gate = Gate([Upper(), Tagged()])
    assert gate.recorded_text(effect, "a secret here") == "tool:x: a [s] here"
    assert gate.recorded_text(effect, "nothing") == "nothing"
    basis = {"rule": "r1", "saw": ["secret", {"deep": "secret"}], "n": 3}
    assert gate.recorded_basis(effect, basis) == {
        "rule": "r1", "saw": ["tool:x: [s]", {"deep": "tool:x: [s]"}], "n": 3,
    }  # fmt: skip
    assert basis["saw"] == ["secret", {"deep": "secret"}]  # the hook's own is not changed
    assert gate.recorded_basis(effect, None) is None
    plain = Gate([])
    assert plain.recorded_text(effect, "a secret") == "a secret"
    assert plain.recorded_basis(effect, {"a": "secret"}) == {"a": "secret"}
