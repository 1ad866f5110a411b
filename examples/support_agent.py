"""A support-desk agent on Mainspring's embedded default (one SQLite file, no services).

It reads a folder's tickets, fans out one triage task per ticket, classifies each
with a model (``ctx.model``: a journaled effect through the model gateway, with
structured output validated against a pydantic type), asks a
human to approve refunds above a limit (a durable interrupt: the process may exit),
writes replies to an outbox exactly once (an effect that honours its idempotency
key), and routes escalations. Run it:

    python examples/support_agent.py                 # approve big refunds
    python examples/support_agent.py --approve no    # deny them

The model: with OPENAI_API_KEY set, OpenAI (MAINSPRING_OPENAI_MODEL, default
gpt-4o-mini); with ANTHROPIC_API_KEY, Anthropic (MAINSPRING_ANTHROPIC_MODEL); with
MAINSPRING_OPENAI_BASE_URL, any OpenAI-compatible server (vLLM, llama.cpp, Ollama);
otherwise a scripted model that classifies by keywords, offline and deterministic.

The run parks at the approvals; the script then resumes it from a *new* runtime on
the same file, as another process would after a human answered. Inspect the journal
afterwards with `mainspring show RUN --store sqlite:///<db>`.

The store (--db, default support_agent.db) and its outbox are created if missing and
never deleted: running the example again adds a run beside the earlier ones, whose
journals stay there to explore. A --db file that is not this example's store (not a
Mainspring store, or one with runs of other graphs), or an outbox file it did not
write, is refused and left untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import anyio
from pydantic import BaseModel

from mainspring import (
    END,
    START,
    Context,
    EventKind,
    Graph,
    NotAStoreError,
    Retry,
    Runtime,
    SchemaVersionError,
    Send,
    append,
)
from mainspring.models import Gateway, ModelRequest, ModelSpec, ScriptedModel, system, user

HERE = Path(__file__).resolve().parent
REFUND_LIMIT = 100


class Desk(TypedDict, total=False):
    inbox: str
    outbox: str
    tickets: list[dict[str, Any]]
    triaged: Annotated[list[dict[str, Any]], append]
    escalated: Annotated[list[str], append]
    summary: dict[str, int]


# -- effects: the only code that touches the outside world ------------------------

_INTENTS = {
    "refund": ("refund", "money back", "reimburse"),
    "bug": ("crash", "error", "broken link", "bug"),
    "account": ("address", "password", "subscription", "login"),
}


class Verdict(BaseModel):
    """What the model must answer: validated, and repaired if it answers otherwise."""

    intent: Literal["refund", "bug", "account", "other"]
    confidence: float


INSTRUCTIONS = (
    "You triage customer support tickets. Answer with the ticket's intent: refund (money "
    "back), bug (something broken in our software), account (address, password, login, "
    "subscription) or other, and your confidence between 0 and 1."
)


def classify(request: ModelRequest) -> dict[str, Any]:
    """The offline model: keyword scores per intent, answered as the Verdict JSON."""
    lowered = request.messages[-1].text.lower()
    scores = {intent: sum(lowered.count(w) for w in words) for intent, words in _INTENTS.items()}
    best = max(scores, key=lambda k: scores[k]) if any(scores.values()) else "other"
    return {"intent": best, "confidence": 0.9 if any(scores.values()) else 0.5}


def model_gateway() -> Gateway:
    """The real model the environment names, else the offline scripted one."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("MAINSPRING_OPENAI_BASE_URL"):
        from mainspring.models import OpenAIChat

        provider: Any = OpenAIChat(base_url=os.environ.get("MAINSPRING_OPENAI_BASE_URL"))
        model = os.environ.get("MAINSPRING_OPENAI_MODEL", "gpt-4o-mini")
    elif os.environ.get("ANTHROPIC_API_KEY"):
        from mainspring.models import Anthropic

        provider = Anthropic()
        model = os.environ.get("MAINSPRING_ANTHROPIC_MODEL", "claude-haiku-4-5")
    else:
        provider, model = ScriptedModel(classify, name="offline-keywords"), "keywords-1"
    return Gateway({"classifier": ModelSpec(provider, model, timeout=30, retries=2)})


def send_reply(outbox: str, run_id: str, ticket_id: str, text: str, idempotency_key: str) -> str:
    """Append a reply to the outbox unless this key was already delivered (exactly once)."""
    path = Path(outbox)
    sent = {r["key"] for r in _outbox(path)}
    if idempotency_key not in sent:
        reply = {"key": idempotency_key, "run": run_id, "ticket": ticket_id, "reply": text}
        with path.open("a") as f:
            f.write(json.dumps(reply) + "\n")
    return idempotency_key


def _outbox(path: Path) -> list[dict[str, Any]]:
    """The replies in the outbox file; ValueError if it is not one this example wrote."""
    if not path.exists():
        return []
    replies = [json.loads(line) for line in path.read_text().splitlines()]
    if not all(isinstance(r, dict) and "key" in r for r in replies):
        raise ValueError(f"{path} holds lines that are not replies")
    return replies


# -- the graph ------------------------------------------------------------------------

g = Graph(Desk, name="support-desk")


@g.node
def load(s: Desk) -> dict[str, Any]:
    return {"tickets": json.loads(Path(s["inbox"]).read_text())}


def fan_out(s: Desk) -> list[Send]:
    return [Send("triage", {"ticket": t, "outbox": s["outbox"]}) for t in s["tickets"]]


@g.node(retry=Retry(attempts=3, backoff=0.05), timeout=30)
async def triage(task: dict[str, Any], ctx: Context) -> dict[str, Any]:
    ticket = task["ticket"]
    verdict = await ctx.model(
        "classifier", [system(INSTRUCTIONS), user(ticket["text"])], output=Verdict, max_tokens=100
    )
    intent = verdict.output.intent
    decision = "answered"
    if intent == "refund":
        amount = ticket["amount"] or _amount_in(ticket["text"])
        if amount > REFUND_LIMIT:
            approved = await ctx.interrupt(
                {
                    "ticket": ticket["id"],
                    "customer": ticket["customer"],
                    "refund": amount,
                    "question": "approve?",
                }
            )
            decision = "refunded" if approved else "refund denied"
        else:
            decision = "refunded"
    elif intent == "bug":
        decision = "escalated"
    reply = f"[{ticket['id']}] {intent}: {decision}"
    await ctx.step("outbox.send", send_reply, task["outbox"], ctx.run_id, ticket["id"], reply)
    ctx.emit({"ticket": ticket["id"], "intent": intent, "decision": decision})
    update: dict[str, Any] = {
        "triaged": [{"id": ticket["id"], "intent": intent, "decision": decision}]
    }
    if decision == "escalated":
        update["escalated"] = [ticket["id"]]
    return update


@g.node
def summarize(s: Desk) -> dict[str, Any]:
    summary: dict[str, int] = {}
    for item in s["triaged"]:
        summary[item["decision"]] = summary.get(item["decision"], 0) + 1
    return {"summary": summary}


@g.node
def page_engineering(s: Desk) -> dict[str, Any]:
    return {"summary": {**s["summary"], "pages": len(s["escalated"])}}


g.edge(START, "load")
g.branch("load", fan_out, ["triage"])
g.edge("triage", "summarize")
g.branch(
    "summarize",
    lambda s: "page" if s.get("escalated") else "done",
    {"page": "page_engineering", "done": END},
)
g.edge("page_engineering", END)
app = g.compile(ref="examples.support_agent:app")


def _amount_in(text: str) -> int:
    match = re.search(r"(\d+)\s*EUR", text)
    return int(match.group(1)) if match else 0


# -- the script -----------------------------------------------------------------------


class Refused(Exception):
    """A --db or outbox file this example did not make: it is left untouched."""


async def main(db: Path, approve: bool, inbox: Path) -> int:
    url = f"sqlite:///{db}"
    outbox = db.with_suffix(".outbox.jsonl")
    try:
        _outbox(outbox)  # read before anything is written
    except (ValueError, OSError) as exc:
        raise Refused(
            f"{outbox} exists and is not this example's outbox ({exc}); it was left untouched: "
            "pass --db with another path"
        ) from None
    # recover="off": this script drives only the run it starts, never earlier ones in the file.
    models = model_gateway()
    async with Runtime.open(url, graphs=[app], recover="off", models=models) as rt:
        # The latest runs are enough to tell this example's store from another one.
        others = sorted({r.graph for r in await rt.list_runs(limit=1000)} - {app.name})
        if others:
            raise Refused(
                f"{db} holds runs of other graphs ({', '.join(others)}), so it is not this "
                "example's store; it was left untouched: pass --db with another path"
            )
        handle = await rt.start(app, {"inbox": str(inbox), "outbox": str(outbox)}, thread="desk-1")
        print(f"run {handle.run_id} on {url}")
        async for event in handle.events():
            _show(event.kind, event.data)
        outcome = await handle.wait()
    print(f"\nrun is {outcome.status.value}; the process could exit now. Pending approvals:")
    for pending in outcome.interrupts:
        print(f"  {pending.id}: {pending.payload}")

    # A human answers; a new runtime (as in another process) resumes the run.
    async with Runtime.open(url, graphs=[app], recover="off", models=models) as rt:
        await rt.resume(handle.run_id, values={p.id: approve for p in outcome.interrupts})
        async for event in rt.handle(handle.run_id).events(after=outcome.seq):
            _show(event.kind, event.data)
        final = await rt.handle(handle.run_id).result()
        events = await rt.events(handle.run_id)
    finished = [
        e.data for e in events if e.kind is EventKind.EFFECT_FINISHED and "result" in e.data
    ]
    distinct = {(d["step"], d["task"], d["effect"]) for d in finished}
    replies = [r for r in _outbox(outbox) if r.get("run") == handle.run_id]
    print(f"\nfinal summary: {json.dumps(final['summary'], sort_keys=True)}")
    print(
        f"journal: {len(events)} events; {len(finished)} effects finished, "
        f"{len(finished) - len(distinct)} of them repeated across the resume"
    )
    print(
        f"outbox: {outbox} ({len(replies)} replies for {len(json.loads(inbox.read_text()))} tickets)"
    )
    spent = [d["usage"] for d in finished if d.get("usage")]
    print(
        f"model: {len(spent)} calls, {sum(u['input_tokens'] for u in spent)} input and "
        f"{sum(u['output_tokens'] for u in spent)} output tokens"
        + ("" if all(u.get("estimated") for u in spent) else " (as the provider reported them)")
    )
    await models.aclose()
    print(f"explore: mainspring show {handle.run_id} --store {url}")
    return 0


def _show(kind: EventKind, data: dict[str, Any]) -> None:
    if kind is EventKind.STEP_STARTED and not data.get("rerun"):
        print(f"  step {data['step']}: {data['node']} started")
    elif kind is EventKind.EMITTED:
        print(f"    {data['data']}")
    elif kind is EventKind.INTERRUPTED:
        print(f"    waiting for a human: {data['payload']}")
    elif kind is EventKind.FINISHED:
        print("  finished")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=Path("support_agent.db"),
        help="SQLite store: created if missing, else one more run is added to it",
    )
    parser.add_argument(
        "--approve", choices=["yes", "no"], default="yes", help="the human's answer to big refunds"
    )
    parser.add_argument("--inbox", type=Path, default=HERE / "data" / "tickets.json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    try:
        code = anyio.run(main, args.db.resolve(), args.approve == "yes", args.inbox.resolve())
    except (Refused, NotAStoreError, SchemaVersionError) as exc:  # not our file: left untouched
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
