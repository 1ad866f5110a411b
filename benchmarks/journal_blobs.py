"""How much a journal stores for a document that a run carries again and again.

Two runs. ``reader``: a step returns a 100 KB document; then ``calls`` effects take it as
an argument and return it (a tool that echoes, or a model call whose messages carry it),
and the run parks. ``agent``: an agent on a scripted model reads the document with a tool
in each of ``turns`` turns of one thread (each run starts from the thread's conversation,
earlier documents included). Prints, per store, the bytes of event data and of blobs, and
the database's size.
Runs on any version of Mainspring (one without blobs reports none), so the same command
compares two checkouts::

    PYTHONPATH=. python benchmarks/journal_blobs.py [--calls 8] [--pg-url URL]

``args_cap``: the gate records at most 8 KB of an effect's arguments by default (a longer
one is a preview); "whole" raises the cap, as a runtime that records model calls whole would.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import string
import tempfile
import uuid
from pathlib import Path
from typing import Any, TypedDict

import asyncpg

from mainspring import END, START, Context, Graph, Runtime

# Words drawn at random (seeded): a document PostgreSQL's TOAST compression cannot shrink
# much more than a real one, so its table sizes say what the journal costs.
_WORDS = [
    "".join(random.Random(i).choices(string.ascii_lowercase, k=1 + i % 9)) for i in range(5000)
]
DOC = " ".join(random.Random(0).choices(_WORDS, k=15_000))[:100_000]


class Doc(TypedDict, total=False):
    doc: str
    seen: list[int]
    approved: bool


def reader(calls: int) -> Any:
    g = Graph(Doc, name="reader")

    @g.node
    async def fetch(s: Doc, ctx: Context) -> dict[str, Any]:
        return {"doc": await ctx.step("fetch", lambda: DOC)}

    @g.node
    async def use(s: Doc, ctx: Context) -> dict[str, Any]:
        return {"seen": [len(await ctx.step(f"call{i}", _echo, s["doc"])) for i in range(calls)]}

    @g.node
    async def ask(s: Doc, ctx: Context) -> dict[str, Any]:
        return {"approved": bool(await ctx.interrupt("ok?"))}

    g.edge(START, "fetch")
    g.edge("fetch", "use")
    g.edge("use", "ask")
    g.edge("ask", END)
    return g.compile()


def _echo(doc: str) -> str:
    return doc


async def _run(url: str, calls: int, whole: bool) -> None:
    async with Runtime.open(url) as rt:
        if whole:
            rt.gate.args_cap = 1 << 30
        handle = await rt.start(reader(calls), {})
        await handle.wait()


async def _agent(url: str, turns: int, whole: bool) -> None:
    from mainspring.agents import Agent
    from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
    from mainspring.tools import tool

    @tool
    def read(name: str) -> str:
        """Read a document."""
        return DOC

    def script(request: ModelRequest) -> Any:
        if request.messages[-1].role == "user":
            return [ToolCall(f"c{len(request.messages)}", "read", {"name": "doc"})]
        return "read it"

    agent = Agent("reader", "fast", "Read.", tools=[read])
    models = Gateway({"fast": ScriptedModel(script)})
    async with Runtime.open(url, models=models, tools=agent.toolbox) as rt:
        if whole:
            rt.gate.args_cap = 1 << 30
        for turn in range(turns):
            await agent.run(rt, f"read the document again ({turn})", thread="t1")


def _sqlite_sizes(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        events = db.execute("SELECT coalesce(sum(length(data)), 0) FROM events").fetchone()[0]
        has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone()
        blobs = (
            db.execute("SELECT coalesce(sum(length(data)), 0) FROM blobs").fetchone()[0]
            if has
            else 0
        )
    return events, blobs, path.stat().st_size


async def _pg_sizes(base: str, schema: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(base)
    try:
        s = f'"{schema}"'
        events = await conn.fetchval(f"SELECT coalesce(sum(octet_length(data)), 0) FROM {s}.events")
        has = await conn.fetchval("SELECT to_regclass($1)", f"{s}.blobs")
        blobs = (
            await conn.fetchval(f"SELECT coalesce(sum(octet_length(data)), 0) FROM {s}.blobs")
            if has
            else 0
        )
        size = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r'",
            schema,
        )
        await conn.execute(f"DROP SCHEMA {s} CASCADE")
        return int(events), int(blobs), int(size)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    opts = parser.parse_args()
    print(
        f"document {len(DOC.encode()):,} bytes; reader: {opts.calls} calls carrying it; "
        f"agent: {opts.turns} turns of a thread, each reading it"
    )
    print("run     store     args_cap  event data   blobs        database")
    runs = {"reader": (_run, opts.calls), "agent": (_agent, opts.turns)}
    for name, (go, n) in runs.items():
        for whole in (False, True):
            cap = "whole" if whole else "8 KB"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "j.db"
                await go(f"sqlite:///{path}", n, whole)
                ev, bl, size = _sqlite_sizes(path)
            print(f"{name:7} sqlite    {cap:8}  {ev:>10,}  {bl:>10,}  {size:>12,}")
            schema = f"ms_bench_{uuid.uuid4().hex[:8]}"
            try:
                await go(f"{opts.pg_url}?schema={schema}", n, whole)
            except OSError as exc:
                print(f"{name:7} postgres  skipped: {exc}")
                continue
            ev, bl, size = await _pg_sizes(opts.pg_url, schema)
            print(f"{name:7} postgres  {cap:8}  {ev:>10,}  {bl:>10,}  {size:>12,}")


if __name__ == "__main__":
    asyncio.run(main())
