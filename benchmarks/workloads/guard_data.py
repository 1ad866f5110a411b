"""W11-secrets and PII: what keeping secrets and personal data out of the records costs.

``W11-secrets``: ten-node graphs in memory, each node one tool call (as W11), sampled in
interleaved rounds: ``bare`` (no tool), ``off`` (a tool declaring nothing, in a toolbox
where nothing declares a secret: W11's path, which secrets must leave alone), ``mixed``
(the same tool in a toolbox where another tool declares a secret: the arguments' gate
hook is on), ``secret`` (a tool declaring one secret from a mapping: looked up, handed,
its result scrubbed) and ``secret_file`` (the same from ``FileSecrets``: a ``stat`` per
lookup). Reported per call over ``off``.

``PII``: the redactor's cost per effect, in a run (a tool call whose arguments and result
hold an email, a phone number and a card number, with ``gates=[Redactor()]`` against
none), and directly (``redact`` + ``after`` of one effect) on a small tool call and on
2 KB of text with and without personal data, side by side with one ``re.sub`` of an
email pattern over the same text (the floor of any single-pattern pass).
"""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path
from typing import Any

from mainspring import END, START, CompiledGraph, Context, Graph, Runtime
from mainspring.engine.gate import Effect, Outcome
from mainspring.guard.pii import Redactor
from mainspring.guard.secrets import FileSecrets, SecretArgs
from mainspring.tools import Tool, Toolbox, ToolContext

from graphs import LINEAR_STEPS, Linear
from harness import US, Result, Settings, interleave, per_call_async
from workloads.tools import echo, tool_chain

INPUT = {"k": "a"}


async def keyed(q: str, ctx: ToolContext) -> str:
    return q if ctx.secrets else "missing"


async def run_secrets(settings: Settings) -> list[Result]:
    (settings.workdir / "secrets").mkdir(exist_ok=True)
    (settings.workdir / "secrets" / "API_KEY").write_text("sk-bench-0123456789abcdef\n")
    plain = Toolbox([Tool(echo, name="plain")])
    mapped = Toolbox(
        [Tool(echo, name="plain"), Tool(keyed, name="keyed", secrets=["API_KEY"])],
        secrets={"API_KEY": "sk-bench-0123456789abcdef"},
    )
    filed = Toolbox(
        [Tool(keyed, name="keyed", secrets=["API_KEY"])],
        secrets=FileSecrets(settings.workdir / "secrets"),
    )
    calls = settings.pick(200, 300)
    bare, off, keyed_app = (
        tool_chain("bare", None),
        tool_chain("off", "plain"),
        tool_chain("keyed", "keyed"),
    )
    async with (
        Runtime.open("memory://", tools=plain) as rt_plain,
        Runtime.open("memory://", tools=mapped) as rt_mapped,
        Runtime.open("memory://", tools=filed) as rt_file,
    ):
        contenders = {
            "bare": (rt_plain, bare),
            "off": (rt_plain, off),
            "mixed": (rt_mapped, off),
            "secret": (rt_mapped, keyed_app),
            "secret_file": (rt_file, keyed_app),
        }
        for runtime, app in contenders.values():
            assert await runtime.run(app, INPUT) == INPUT

        def sampler(runtime: Runtime, app: CompiledGraph) -> Any:
            async def sample() -> Any:
                return await per_call_async(lambda: runtime.run(app, INPUT), calls) / LINEAR_STEPS

            return sample

        samples = await interleave(
            {name: sampler(*pair) for name, pair in contenders.items()},
            reps=settings.pick(6, 12),
            warmup=2,
        )
    best = {name: s.best * US for name, s in samples.items()}
    direct = await _direct_secrets(mapped, settings)
    result = Result(
        "W11-secrets",
        best["secret"] - best["bare"],
        best["off"] - best["bare"],
        "us/call",
        extra={
            "tool_layer_off_us": best["off"] - best["bare"],
            "mixed_box_adds_us": best["mixed"] - best["off"],
            "secret_adds_us": best["secret"] - best["off"],
            "secret_file_adds_us": best["secret_file"] - best["off"],
            **direct,
        },
    )
    return [result]


async def _direct_secrets(box: Toolbox, settings: Settings) -> dict[str, float]:
    """Outside a run, best of interleaved samples: the arguments hook on a plain tool's
    effect and on a secret tool's, and ``Toolbox.call`` of the secret tool over the plain."""
    hook = next(h for h in box.gate_hooks if isinstance(h, SecretArgs))
    plain = Effect("tool", "tool:plain", {"q": "a"}, "k", "r", "n", 1, 0, 0, 1)
    keyed_effect = Effect("tool", "tool:keyed", {"q": "a"}, "k", "r", "n", 1, 0, 0, 1)
    n = settings.pick(5_000, 20_000)
    out = {"hook_plain_us": float("inf"), "hook_secret_us": float("inf")}
    calls = {"plain": float("inf"), "keyed": float("inf")}
    await box.call("keyed", {"q": "a"})
    for _ in range(5):
        for name, effect in (("hook_plain_us", plain), ("hook_secret_us", keyed_effect)):
            started = time.perf_counter()
            for _ in range(n):
                hook.redact(effect, {"q": "a"})
            out[name] = min(out[name], (time.perf_counter() - started) / n * US)
        for tool_name in ("plain", "keyed"):
            timing = await per_call_async(partial(box.call, tool_name, {"q": "a"}), n // 4)
            calls[tool_name] = min(calls[tool_name], timing.wall * US)
    out["call_secret_over_plain_us"] = calls["keyed"] - calls["plain"]
    return out


# -- PII --------------------------------------------------------------------------------

CUSTOMER = "carol.jones@example.org"
RESULT = {"email": CUSTOMER, "phone": "+1 415 555 2671", "card": "4111 1111 1111 1111",
          "tier": "gold", "orders": 17}  # fmt: skip
_FILLER = (
    "The customer wrote again about order 77231 placed on 2026-11-30; the parcel left the "
    "warehouse on time but the tracking page has not moved for four days. "
)
TEXT_CLEAN = (_FILLER * 20)[:2048]
TEXT_PII = (
    TEXT_CLEAN[:600] + f" reach me at {CUSTOMER} or +44 20 7946 0958, card 5555 5555 5555 4444 "
)
TEXT_PII = (TEXT_PII + TEXT_CLEAN)[:2048]
# the same, not ASCII: an accented word, the card grouped by no-break spaces, the phone
# number's "+" fullwidth (each character folded for the checks, the original replaced)
TEXT_UNICODE = (
    "Caf\u00e9 " + TEXT_PII.replace("5555 5555 5555 4444", "5555\u00a05555\u00a05555\u00a04444")
    .replace("+44", "\uff0b44")
)[:2048]  # fmt: skip
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


async def lookup(email: str) -> dict[str, Any]:
    return dict(RESULT, email=email)


def _lookup_chain(name: str) -> CompiledGraph:
    async def call(s: Any, ctx: Context) -> dict[str, str]:
        await ctx.tool("lookup", email=CUSTOMER)
        return {"k": s["k"]}

    g = Graph(Linear)
    previous = START
    for i in range(LINEAR_STEPS):
        g.node(f"n{i}", call)
        g.edge(previous, f"n{i}")
        previous = f"n{i}"
    g.edge(previous, END)
    return g.compile(name=name)


def _direct(redactor: Redactor, args: dict[str, Any], result: Any, calls: int) -> float:
    """Microseconds per effect of the redactor's two hooks (arguments and result)."""
    effect = Effect("tool", "tool:lookup", args, "k", "r", "n", 1, 0, 0, 1)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            redactor.redact(effect, args)
            redactor.after(effect, Outcome(result))
        best = min(best, (time.perf_counter() - started) / calls)
    return best * US


def _one_pass(text: str, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            EMAIL.sub("[email]", text)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * US


async def run_pii(settings: Settings) -> list[Result]:
    box = Toolbox([Tool(lookup, name="lookup")])
    app = _lookup_chain("pii")
    calls = settings.pick(200, 500)
    async with (
        Runtime.open("memory://", tools=box) as plain,
        Runtime.open("memory://", tools=box, gates=[Redactor()]) as redacted,
    ):
        for runtime in (plain, redacted):
            await runtime.run(app, INPUT)

        def sampler(runtime: Runtime) -> Any:
            async def sample() -> Any:
                return await per_call_async(lambda: runtime.run(app, INPUT), calls) / LINEAR_STEPS

            return sample

        samples = await interleave(
            {"off": sampler(plain), "on": sampler(redacted)}, reps=settings.pick(6, 15), warmup=2
        )
    redactor = Redactor()
    n = settings.pick(2_000, 10_000)
    small = _direct(redactor, {"email": CUSTOMER}, RESULT, n)
    text_pii = _direct(redactor, {"text": TEXT_PII}, {"text": TEXT_PII}, n // 10)
    text_clean = _direct(redactor, {"text": TEXT_CLEAN}, {"text": TEXT_CLEAN}, n // 10)
    text_unicode = _direct(redactor, {"text": TEXT_UNICODE}, {"text": TEXT_UNICODE}, n // 10)
    floor = 2 * _one_pass(TEXT_PII, n // 10)  # arguments and result: two passes
    on, off = samples["on"].best * US, samples["off"].best * US
    result = Result(
        "PII-redact",
        on - off,
        None,
        "us/effect",
        extra={
            "in_run_on_us": on,
            "in_run_off_us": off,
            "small_call_us": small,
            "text_2kb_with_pii_us": text_pii,
            "text_2kb_clean_us": text_clean,
            "text_2kb_unicode_us": text_unicode,
            "one_email_resub_2kb_x2_us": floor,
            "text_2kb_over_one_pattern": text_pii / floor,
        },
    )
    return [result]


if __name__ == "__main__":
    import asyncio
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(quick=True, workdir=Path(tmp), pg_url="")
        for family in (run_secrets, run_pii):
            for r in asyncio.run(family(s)):
                print(json.dumps({"workload": r.workload, "value": r.mainspring, **r.extra}))
