"""A graph the console tests (and docs/console.md) run: it drafts a mail, parks for a person's
approval (``ctx.interrupt``), then sends it, or not (an address without ``@`` fails the run: a traceback to show).

The approval's answer may be ``true``/``false`` (approve, reject), ``{"approve": false,
"reason": ...}`` (a reject with a reason) or ``{"args": {...}}`` (approved with edited args).
"""

from __future__ import annotations

from typing import Any, TypedDict

from mainspring import END, START, Context, Graph
from mainspring.models.gateway import Gateway
from mainspring.models.providers.scripted import ScriptedModel


class Mail(TypedDict, total=False):
    to: str
    draft: str
    approved: bool
    reason: str
    sent: str


def compose(to: str) -> str:
    return f"Hello {to}, your order has shipped."


async def draft(s: Mail, ctx: Context) -> dict[str, Any]:
    text = await ctx.step("compose", compose, s.get("to", "you"))
    polished = await ctx.model("writer", f"Polish this mail: {text}")
    return {"draft": polished.text or text}


async def review(s: Mail, ctx: Context) -> dict[str, Any]:
    answer = await ctx.interrupt(
        {"approve": "send this mail?", "args": {"to": s.get("to", ""), "body": s.get("draft", "")}}
    )
    if isinstance(answer, dict) and isinstance(answer.get("args"), dict):
        args = answer["args"]
        return {
            "approved": True,
            "to": str(args.get("to", s.get("to", ""))),
            "draft": str(args.get("body", s.get("draft", ""))),
        }
    if isinstance(answer, dict):
        return {"approved": bool(answer.get("approve")), "reason": answer.get("reason") or ""}
    return {"approved": bool(answer)}


def send(s: Mail) -> dict[str, Any]:
    if not s.get("approved"):
        return {"sent": "not sent"}
    to = s.get("to", "")
    if "@" not in to:
        raise ValueError(f"cannot send to {to!r}: not a mail address")
    return {"sent": f"sent to {to}"}


#: What ``chat``'s model answers, a few characters at a time.
STORY = "Once upon a time a durable run parked, was approved, and streamed this story to you."


def models() -> Gateway:
    """The models the graphs ask (``Runtime(models=...)``): scripted, priced at $3/$15 a
    million tokens, so the console has tokens and a cost to show; ``storyteller`` streams
    its answer slowly enough to be watched."""
    writer = ScriptedModel(["Hello, your order has shipped today. Kind regards, the shop."])
    storyteller = ScriptedModel([STORY], chunk=6, token_delay=0.02)
    return Gateway(
        {"writer": writer, "storyteller": storyteller},
        prices={"writer": (3.0, 15.0), "storyteller": (3.0, 15.0), "scripted": (3.0, 15.0)},
    )


g = Graph(Mail, name="mail")
g.node(draft)
g.node(review)
g.node(send)
g.edge(START, "draft")
g.edge("draft", "review")
g.edge("review", "send")
g.edge("send", END)
mail = g.compile()


class Chat(TypedDict, total=False):
    story: str


async def wait_for_go(s: Chat, ctx: Context) -> dict[str, Any]:
    await ctx.interrupt({"approve": "tell the story?"})
    return {}


async def tell(s: Chat, ctx: Context) -> dict[str, Any]:
    answer = await ctx.model("storyteller", "Tell a short story.")
    return {"story": answer.text}


c = Graph(Chat, name="chat")
c.node(wait_for_go)
c.node(tell)
c.edge(START, "wait_for_go")
c.edge("wait_for_go", "tell")
c.edge("tell", END)
chat = c.compile()
