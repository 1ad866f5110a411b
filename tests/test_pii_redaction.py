"""The PII redactor: what it finds and what it leaves (examples and hypothesis shapes),
its per-field and per-effect rules, and as a gate hook in real runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.agents import Agent
from mainspring.engine.gate import Deny
from mainspring.errors import EffectDeniedError
from mainspring.events import EffectDecided, EffectFinished, EffectStarted
from mainspring.guard.pii import KINDS, Redactor, Rule, is_card, luhn, redact_text
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.tools import Toolbox, ToolFailedError, tool

M = {k: f"[{k}]" for k in KINDS}.__getitem__


def red(text: str, kinds: Any = KINDS) -> str:
    return redact_text(text, kinds, M)


# -- what it finds -----------------------------------------------------------------------

FOUND = [
    ("write to bob.smith+tag@mail.example.co.uk today", "write to [email] today"),
    ("<alice@example.org>", "<[email]>"),
    ("visa 4111 1111 1111 1111.", "visa [card]."),
    ("mc 5555-5555-5555-4444 amex 378282246310005", "mc [card] amex [card]"),
    ("discover 6011111111111117, jcb 3530111333300000", "discover [card], jcb [card]"),
    ("call +1 (415) 555-2671 now", "call [phone] now"),
    ("or 415-555-2671 or (415) 555 2671 or 415.555.2671", "or [phone] or [phone] or [phone]"),
    ("uk +44 20 7946 0958, national 020 7946 0958", "uk [phone], national [phone]"),
    ("de +49 30 1234567", "de [phone]"),
    ("key=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t", "key=[key]"),
    ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv-xyz", "[key]"),
    ("token ghp_" + "A1b2C3d4" * 5, "token [key]"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopq", "[key]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [key]"),
    ("slack xoxb-2048-1234567890-AbCdEfGhIjKl", "slack [key]"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [key]"),
    ("google AIzaSyA-1234567890abcdefghijklmnopqrstu", "google [key]"),
    ("Authorization: Bearer abc.DEF-ghi_jkl~mno/pqr+stu=", "Authorization: Bearer [key]"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "jwt [jwt]",
    ),
]

LEFT = [
    "order 1234567890123456 (fails the Luhn check)",
    "luhn-valid but no issuer: 1234567812345670 and 9999999999999995",
    "a mixed card-like 4111 1111-1111 1111",
    "timestamp 1796592000000 and epoch 1796592000",
    "date 2026-12-07 time 10:30:00 and 07/12/2026",
    "ip 192.168.100.200 version 1.22.333 amount 1,234,567.89 and 12345678.90",
    "uuid 123e4567-e89b-12d3-a456-426614174000 sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "short numbers 12345678, 555-2671, ext. 1234",
    "not an email: user@localhost, @handle, a@b",
    "sk-short and ghp_tooShort and AKIA123",
    "invoice INV-2026-000123 and ticket #98765",
    "isbn 978-3-16-148410-0",
]


@pytest.mark.parametrize(("text", "expected"), FOUND)
def test_it_finds_each_kind(text: str, expected: str) -> None:
    assert red(text) == expected


@pytest.mark.parametrize("text", LEFT)
def test_it_leaves_what_only_looks_like_personal_data(text: str) -> None:
    assert red(text) == text


def test_luhn_and_the_issuer_check() -> None:
    assert luhn("79927398713") and not luhn("79927398710")
    assert is_card("4111111111111111") and not is_card("4111111111111112")
    assert not is_card("1234567812345670")  # Luhn-valid, but no network issues 1...


def test_kinds_can_be_chosen() -> None:
    text = "bob@example.com 4111111111111111 +1 415 555 2671"
    assert red(text, {"email"}) == "[email] 4111111111111111 +1 415 555 2671"
    assert red(text, {"card", "phone"}) == "bob@example.com [card] [phone]"
    with pytest.raises(ValueError, match="unknown kinds"):
        Rule(kinds=["emails"])


# -- shapes (hypothesis) -----------------------------------------------------------------

PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3530", "36", "62"]
LENGTH = {"34": 15, "37": 15, "36": 14}


def _check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn(body + d):
            return d
    raise AssertionError


@st.composite
def cards(draw: st.DrawFn, valid: bool = True) -> str:
    prefix = draw(st.sampled_from(PREFIXES))
    length = LENGTH.get(prefix, 16)
    body = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1,
                                 max_size=length - len(prefix) - 1))  # fmt: skip
    check = _check_digit(body)
    if not valid:
        check = str((int(check) + draw(st.integers(1, 9))) % 10)
    digits = body + check
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


# Separators that look like a space or a hyphen, and digits of other scripts: a card
# written with them is as much a card (a no-break space from a word processor, fullwidth
# digits from an IME).
UNICODE_SEPARATORS = ["\u00a0", "\u2007", "\u202f", "\u2009", "\u3000", "\u200b", "\u2010",
                      "\u2011", "\u2013", "\u2212", "\uff0d"]  # fmt: skip
DIGIT_ZEROS = [0x30, 0xFF10, 0x0660, 0x06F0, 0x0966]  # ASCII, fullwidth, Arabic-Indic, ...


@st.composite
def unicode_cards(draw: st.DrawFn, valid: bool = True) -> str:
    """A card of :func:`cards`, its digits each in a script drawn, grouped by one Unicode
    separator."""
    card = draw(cards(valid=valid)).replace(" ", "").replace("-", "")
    zeros = draw(st.lists(st.sampled_from(DIGIT_ZEROS), min_size=len(card), max_size=len(card)))
    digits = "".join(chr(z + int(d)) for z, d in zip(zeros, card, strict=True))
    sep = draw(st.sampled_from(["", " ", *UNICODE_SEPARATORS]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


WORDS = st.text("abcdefghij klmnop", min_size=0, max_size=20).map(lambda t: t.strip())


@given(cards(), WORDS, WORDS)
@settings(max_examples=200)
def test_every_card_shape_is_found(card: str, before: str, after: str) -> None:
    text = f"{before} {card} {after}"
    assert red(text) == f"{before} [card] {after}"


@given(cards(valid=False), WORDS)
@settings(max_examples=200)
def test_a_card_shape_with_a_wrong_check_digit_is_left(card: str, before: str) -> None:
    text = f"{before} {card}"
    assert "[card]" not in red(text)


@given(unicode_cards(), WORDS, WORDS)
@settings(max_examples=300)
def test_a_card_in_other_digits_or_separators_is_found_and_the_rest_kept(
    card: str, before: str, after: str
) -> None:
    text = f"{before} {card} {after}"
    assert red(text) == f"{before} [card] {after}"


@given(unicode_cards(valid=False), WORDS)
@settings(max_examples=200)
def test_a_unicode_card_shape_with_a_wrong_check_digit_is_left(card: str, before: str) -> None:
    text = f"{before} {card}"
    assert "[card]" not in red(text)  # (part of it may be a phone number's shape)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111\u00a01111\u00a01111\u00a01111 ok", "card [card] ok"),
        ("card \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11.", "card [card]."),
        ("tel +44\u00a020\u00a07946\u00a00958", "tel [phone]"),
        ("tel \uff0b44 20 7946 0958", "tel [phone]"),
        ("call (415)\u00a0555\u20132671", "call [phone]"),
        ("020\u00a07946\u00a00958", "[phone]"),
        ("4111\u00a01111\u00a01111\u00a01112", "4111\u00a01111\u00a01111\u00a01112"),  # checksum
        ("4111\u00a01111-1111\u00a01111", "4111\u00a01111-1111\u00a01111"),  # a mix
        ("\u0661\u0662\u0663\u0664 \u0665\u0666", "\u0661\u0662\u0663\u0664 \u0665\u0666"),
    ],
)  # fmt: skip
def test_unicode_digits_and_separators(text: str, expected: str) -> None:
    assert red(text) == expected


@st.composite
def phones(draw: st.DrawFn) -> str:
    """+CC and 2 to 5 groups of 2 to 4 digits, 8 to 15 digits in all."""
    country = draw(st.sampled_from(["1", "33", "44", "49", "61", "81", "353", "971"]))
    sizes = draw(st.lists(st.integers(2, 4), min_size=2, max_size=5))
    while len(country) + sum(sizes) > 15:
        sizes.pop()
    if len(sizes) < 2 or len(country) + sum(sizes) < 8:
        sizes = [3, 3, 4]
    groups = [draw(st.text("0123456789", min_size=n, max_size=n)) for n in sizes]
    sep = draw(st.sampled_from([" ", "-", "."]))
    return f"+{country} " + sep.join(groups)


@given(phones(), WORDS)
@settings(max_examples=200)
def test_every_international_phone_shape_is_found(phone: str, before: str) -> None:
    assert red(f"{before} {phone}", {"phone"}) == f"{before} [phone]"


@given(st.integers(200, 999), st.integers(200, 999), st.integers(0, 9999),
       st.sampled_from(["({a}) {b}-{c:04d}", "{a}-{b}-{c:04d}", "{a}.{b}.{c:04d}"]))  # fmt: skip
def test_every_north_american_shape_is_found(a: int, b: int, c: int, shape: str) -> None:
    assert red("tel " + shape.format(a=a, b=b, c=c)) == "tel [phone]"


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_redacting_twice_changes_nothing_more(text: str) -> None:
    once = red(text)
    assert red(once) == once


@given(st.text(st.characters(blacklist_categories=["Nd"], blacklist_characters="@"), max_size=200))
def test_text_without_digits_or_at_signs_is_left_as_it_is(text: str) -> None:
    if "eyJ" not in text and "Bearer " not in text.replace("bearer ", "Bearer "):
        assert red(text, {"email", "card", "phone", "jwt"}) == text


# -- rules -------------------------------------------------------------------------------


def test_rules_per_field_skip_mask_only_kinds_and_allow() -> None:
    redactor = Redactor(
        Rule(
            skip=["order_id"],
            mask=["ssn", "args.profile.*"],
            fields={"notes": ("email",)},
            allow=["help@acme.com", re.compile(r".*@example\.com")],
        )
    )
    record = {
        "args": {
            "to": "bob@x.org",
            "cc": ["help@acme.com", "ann@example.com", "eve@y.org"],
            "order_id": "4111111111111111",
            "ssn": "078-05-1120",
            "notes": "call 415-555-2671 or bob@x.org",
            "profile": {"dob": "1970-01-01", "city": "Paris"},
            "amount": 4111111111111111,
            "count": 3,
        }
    }
    assert redactor(record) == {
        "args": {
            "to": "[email]",
            "cc": ["help@acme.com", "ann@example.com", "[email]"],
            "order_id": "4111111111111111",
            "ssn": "[redacted]",
            "notes": "call 415-555-2671 or [email]",
            "profile": {"dob": "[redacted]", "city": "[redacted]"},
            "amount": "[card]",
            "count": 3,
        }
    }
    only = Redactor(Rule(only=["args.body"]))
    scanned = only({"args": {"body": "bob@x.org", "subject": "bob@x.org"}})
    assert scanned == {"args": {"body": "[email]", "subject": "bob@x.org"}}


def test_rules_per_effect_and_the_marker() -> None:
    redactor = Redactor(
        Rule(kinds=["email"]),
        effects={"tool:crm.*": Rule(kinds=["phone"]), "model:*": Rule(skip=["args"])},
        marker="<{kind} removed>",
    )
    text = "bob@x.org +44 20 7946 0958"
    assert redactor({"name": "tool:crm.lookup", "args": {"q": text}})["args"]["q"] == (
        "bob@x.org <phone removed>"
    )
    assert redactor({"name": "tool:other", "args": {"q": text}})["args"]["q"] == (
        "<email removed> +44 20 7946 0958"
    )
    assert redactor({"name": "model:fast", "args": {"q": text}})["args"]["q"] == text
    with pytest.raises(ValueError, match="must hold"):
        Redactor(marker="[x]")


# -- in runs -----------------------------------------------------------------------------


class S(TypedDict, total=False):
    to: str
    got: Any
    error: str
    answer: Any


@tool
def crm_lookup(email: str) -> dict[str, Any]:
    """Looks a customer up by email."""
    return {
        "email": email,
        "phone": "+1 415 555 2671",
        "card": "4111 1111 1111 1111",
        "tier": "gold",
    }


@tool
def crm_fail(email: str) -> str:
    """Fails, naming the customer."""
    raise LookupError(f"no customer with email {email}")


SEEN: list[str] = []


def _graph() -> Any:
    async def look(s: S, ctx: Context) -> S:
        got = await ctx.tool("crm_lookup", email=s["to"])
        SEEN.append(repr(got))
        try:
            await ctx.tool("crm_fail", email=s["to"])
        except ToolFailedError as exc:
            error = str(exc)
        answer = await ctx.interrupt({"ok?": True})
        return {"got": got, "error": error, "answer": answer}

    g = Graph(S)
    g.node("look", look)
    g.edge(START, "look")
    g.edge("look", END)
    return g.compile(name="pii")


@pytest.mark.anyio
async def test_as_a_gate_hook_the_journal_and_the_node_see_the_same_redacted_values(
    tmp_path: Path,
) -> None:
    SEEN.clear()
    box = Toolbox([crm_lookup, crm_fail])
    app = _graph()
    async with Runtime.open(
        f"sqlite:///{tmp_path / 'p.db'}", tools=box, gates=[Redactor()], graphs=[app]
    ) as rt:
        handle = await rt.start(app, {"to": "carol@example.org"})
        await handle.wait()
        await rt.resume(handle.run_id, "yes")  # the node runs again from the journal
        state = await rt.handle(handle.run_id).result()
        events = await rt.events(handle.run_id)
    expected = {"email": "[email]", "phone": "[phone]", "card": "[card]", "tier": "gold"}
    assert state["got"] == expected and [repr(expected)] * 2 == SEEN  # live and resumed alike
    assert state["error"] == "tool 'crm_fail' failed: LookupError: no customer with email [email]"
    started = [e.data for e in events if isinstance(e.data, EffectStarted)]
    assert started[0].args == {"email": "[email]"}
    finished = [e.data for e in events if isinstance(e.data, EffectFinished)]
    assert finished[0].result == expected and "carol" not in repr(finished[1].error)
    notes = [(e.data.decision, e.data.reason) for e in events if isinstance(e.data, EffectDecided)]
    assert notes == [
        ("after", "redacted 1 card, 1 email, 1 phone in the result"),
        ("after", "redacted 1 email in the error"),
    ]
    assert state["to"] == "carol@example.org"  # the run's own state is not an effect's record


@pytest.mark.anyio
async def test_a_models_request_is_recorded_redacted_but_sent_as_it_was(tmp_path: Path) -> None:
    def script(request: ModelRequest) -> Any:
        return f"noted: {request.messages[-1].text}"

    model = ScriptedModel(script)
    agent = Agent("notes", "fast", "Take notes.")
    async with Runtime.open(
        f"sqlite:///{tmp_path / 'm.db'}",
        models=Gateway({"fast": model}),
        tools=agent.toolbox,
        gates=[Redactor()],
    ) as rt:
        result = await agent.run(rt, "my card is 4111 1111 1111 1111")
        events = await rt.events(result.run_id)
    assert result.status is RunStatus.FINISHED
    assert "4111 1111 1111 1111" in model.calls[0].messages[-1].text  # the model got it
    [request] = [e.data.args for e in events if isinstance(e.data, EffectStarted)]
    assert "[card]" in repr(request) and "4111" not in repr(request)


MAILED: list[str] = []


@tool
def send_mail(to: str) -> str:
    """Send a mail."""
    MAILED.append(to)
    return "sent"


@pytest.mark.anyio
@pytest.mark.parametrize("results", [("tool",), ("tool", "model")])
async def test_model_answers_are_redacted_only_when_asked_and_then_before_use(
    results: tuple[str, ...],
) -> None:
    """The default scope (tool results) leaves a model's answer as it was: its tool calls
    carry the address the user gave. ``results=("tool", "model")`` redacts the answer
    before anyone uses it: the journal holds no address, and neither does the tool call
    the agent makes from it (the documented price)."""
    address = "jane.doe@example.com"

    def script(request: ModelRequest) -> Any:
        if not any(m.role == "tool" for m in request.messages):
            return [ToolCall("c1", "send_mail", {"to": address})]
        return f"done, mailed {address}"

    MAILED.clear()
    agent = Agent("mailer", "fast", "Mail people.", tools=[send_mail])
    async with Runtime.open(
        "memory://",
        models=Gateway({"fast": ScriptedModel(script)}),
        tools=Toolbox(agent.all_tools()),
        gates=[Redactor(results=results)],
    ) as rt:
        result = await agent.run(rt, f"mail {address}")
        events = await rt.events(result.run_id)
    assert result.status is RunStatus.FINISHED
    model_finished = [
        e.data for e in events if isinstance(e.data, EffectFinished) and e.data.name == "model:fast"
    ]
    if results == ("tool",):
        assert [address] == MAILED and result.text == f"done, mailed {address}"
        assert address in repr(model_finished)
    else:
        assert MAILED == ["[email]"] and result.text == "done, mailed [email]"
        # only the run's input keeps it (a run's input and state are not effects' records)
        assert {e.kind for e in events if address in repr(e.data)} == {"run_started"}


class _QuotingDeny:
    """A careless hook: its denial quotes the arguments."""

    name = "quoting"

    def before(self, effect: Any) -> Any:
        if effect.name == "tool:send_mail":
            return Deny(f"will not mail {effect.args['to']}", {"to": effect.args["to"]})
        return None


@pytest.mark.anyio
async def test_a_denials_reason_and_basis_are_redacted_in_the_journal_and_the_error() -> None:
    """``Redactor.redact_text`` through the gate's ``recorded_text``: the reason a hook (or
    a policy rule) wrote from the arguments reaches neither the journal nor the node."""
    address = "jane.doe@example.com"

    async def node(s: S, ctx: Context) -> S:
        try:
            await ctx.tool("send_mail", to=address)
        except EffectDeniedError as exc:
            return {"error": str(exc)}
        return {}

    g = Graph(S)
    g.node("mail", node)
    g.edge(START, "mail")
    g.edge("mail", END)
    app = g.compile(name="denied-mail")
    async with Runtime.open(
        "memory://", tools=Toolbox([send_mail]), gates=[_QuotingDeny(), Redactor()]
    ) as rt:
        outcome = await (await rt.start(app, {})).wait()
        events = await rt.events(outcome.run_id)
    assert outcome.state["error"].endswith("denied by quoting: will not mail [email]")
    [decided] = [e.data for e in events if isinstance(e.data, EffectDecided)]
    assert decided.reason == "will not mail [email]" and decided.basis == {"to": "[email]"}
    assert not [e.kind for e in events if address in repr(e.data)]
