"""Graphs and tools of the canary-secret tests (importable, so the CLI can name them)."""

from __future__ import annotations

import logging
import os
from typing import Any, TypedDict

from mainspring import END, START, Context, Graph
from mainspring.tools import ToolContext, ToolError, tool

log = logging.getLogger("acme.tools")


class S(TypedDict, total=False):
    note: str
    out: list[Any]


@tool(secrets=["API_KEY"])
def uses(ctx: ToolContext) -> str:
    """Calls an upstream with the key and says how it went."""
    return f"called upstream with a key of {len(ctx.secret('API_KEY'))} characters"


@tool(secrets=["API_KEY"])
def echoes(ctx: ToolContext) -> dict[str, Any]:
    """A careless tool: its result quotes the key in several shapes."""
    key = ctx.secret("API_KEY")
    return {"key": key, "header": f"Bearer {key}", "nested": [{"k": key}], key: "as a key"}


@tool(secrets=["API_KEY"])
def fails(ctx: ToolContext) -> str:
    """Fails with the key in its message and in the cause of its error."""
    key = ctx.secret("API_KEY")
    try:
        raise KeyError(f"upstream has no account for {key}")
    except KeyError as exc:
        raise RuntimeError(f"upstream refused key {key!r}") from exc


@tool(secrets=["API_KEY"])
def logs(ctx: ToolContext) -> str:
    """Logs the key, with and without an exception."""
    key = ctx.secret("API_KEY")
    log.warning("calling upstream with %s", key)
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        log.exception("the key %s failed", key)
    return "logged"


@tool(secrets=["API_KEY"])
def takes(note: str, ctx: ToolContext) -> str:
    """Takes a note (the node passes the key in it)."""
    return f"took {len(note)} characters"


@tool(secrets=["API_KEY"], needs_approval=True)
def guarded(note: str, ctx: ToolContext) -> str:
    """Needs a person's approval; its argument holds the key."""
    return "approved and done"


TOOLS = [uses, echoes, fails, logs, takes, guarded]


def _graph(name: str, body: Any) -> Any:
    g = Graph(S)
    g.node("work", body)
    g.edge(START, "work")
    g.edge("work", END)
    return g.compile(name=name, ref=f"tests.secrets_graphs:{name}")


async def _everything(s: S, ctx: Context) -> S:
    out: list[Any] = [await ctx.tool("uses"), await ctx.tool("echoes"), await ctx.tool("logs")]
    # node code that holds the secret itself (it read it from the environment) and passes it
    note = f"the key is {os.environ['MS_CANARY_API_KEY']}"
    out.append(await ctx.tool("takes", note=note))
    try:
        await ctx.tool("fails")
    except ToolError as exc:
        out.append(f"caught: {exc}")
    out.append(await ctx.tool("guarded", note=note))
    return {"out": out}


async def _failing(s: S, ctx: Context) -> S:
    await ctx.tool("fails")
    return {}


everything = _graph("everything", _everything)
failing = _graph("failing", _failing)


async def _refused(s: S, ctx: Context) -> S:
    """Passes the key to calls a policy refuses: a rule that fails on it, a hook quoting it."""
    key = os.environ["MS_CANARY_API_KEY"]
    out: list[Any] = []
    for note in (key, f"quote {key}"):
        try:
            await ctx.tool("takes", note=note)
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
    return {"out": out}


refused = _graph("refused", _refused)
