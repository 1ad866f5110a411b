"""W8's child process: one cold start, timed from inside, printed as one JSON line.

    python coldstart_child.py setup SIDE PATH          # a store with a run parked at an interrupt
    python coldstart_child.py measure SIDE PATH KEY    # import, open, resume it; print the times
    python coldstart_child.py deps - -                 # import Mainspring's dependencies only

SIDE is ``mainspring`` (under ``asyncio.run``), ``mainspring-anyio`` (under
``anyio.run``) or ``langgraph``. KEY is the parked run's id (Mainspring) or
thread id (LangGraph), as ``setup`` printed it. Both sides run the same graph:
``first`` -> ``ask`` (interrupts; on resume returns the value) -> ``last``.

Only the standard library is imported at the top, and ``asyncio`` and
``sqlite3`` are imported before the clock starts, as in any async program:
everything Mainspring or LangGraph import is inside the measurement. Times are
``time.perf_counter`` milliseconds from ``t0``, the moment before the import.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from typing import Any, TypedDict

MARKS: dict[str, float] = {}  # set by the nodes: when each moment of the resumed run came
VALUE = "yes"


class State(TypedDict, total=False):
    k: str


def mark(name: str) -> None:
    MARKS.setdefault(name, time.perf_counter())


# --- the graph's nodes, shared by both sides ---------------------------------------


def first(state: State) -> State:
    return {"k": "first"}


def last(state: State) -> State:
    mark("last")  # the node after the interrupt starts
    return {"k": state["k"] + "!"}


async def ms_ask(state: State, ctx: Any) -> State:
    mark("enter")  # the resumed run's first node body (the interrupted node, run again)
    value = await ctx.interrupt("ok?")
    mark("value")
    return {"k": str(value)}


def lg_ask(state: State) -> State:
    from langgraph.types import interrupt  # already imported by langgraph.graph

    mark("enter")
    value = interrupt("ok?")
    mark("value")
    return {"k": str(value)}


def ms_graph() -> Any:
    from mainspring import END, START, Graph

    g = Graph(State)
    g.node("first", first)
    g.node("ask", ms_ask)
    g.node("last", last)
    g.edge(START, "first")
    g.edge("first", "ask")
    g.edge("ask", "last")
    g.edge("last", END)
    return g.compile(name="coldstart")


def lg_graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(State)
    g.add_node("first", first)
    g.add_node("ask", lg_ask)
    g.add_node("last", last)
    g.add_edge(START, "first")
    g.add_edge("first", "ask")
    g.add_edge("ask", "last")
    g.add_edge("last", END)
    return g.compile(checkpointer=saver)


# --- setup: a run parked at the interrupt -----------------------------------------


async def ms_setup(path: str) -> str:
    from mainspring import Runtime

    async with Runtime.open(f"sqlite:///{path}") as rt:
        handle = await rt.start(ms_graph(), {"k": "a"})
        outcome = await handle.wait()
        if outcome.status.value != "interrupted":
            raise AssertionError(f"the setup run did not park: {outcome}")
        return handle.run_id


def lg_setup(path: str) -> str:
    from langgraph.checkpoint.sqlite import SqliteSaver

    thread = "coldstart"
    with sqlite3.connect(path, check_same_thread=False) as conn:
        saver = SqliteSaver(conn)
        saver.setup()
        out = lg_graph(saver).invoke({"k": "a"}, _lg_config(thread), durability="sync")
        if "__interrupt__" not in out:
            raise AssertionError(f"the setup run did not park: {out}")
    return thread


def _lg_config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


# --- measure: import, open, resume ------------------------------------------------


def phase(name: str) -> None:
    """Marks a phase on stderr, where ``-X importtime`` writes (the parent's diagnostic)."""
    print(f"coldstart: {name}", file=sys.stderr, flush=True)


async def ms_measure(path: str, run_id: str) -> dict[str, Any]:
    phase("import")
    t0 = time.perf_counter()
    import mainspring

    t_import = time.perf_counter()
    phase("open")
    before = set(sys.modules)
    t_opening = time.perf_counter()  # the marks above cost a few us: not counted
    async with mainspring.Runtime.open(f"sqlite:///{path}") as rt:
        t_open = time.perf_counter()
        opened = sorted(set(sys.modules) - before)
        phase("resume")
        handle = await rt.resume(run_id, VALUE, graph=ms_graph())
        result = await handle.result()
    return _times(t0, t_import, t_opening, t_open, result, opened)


def lg_measure(path: str, thread: str) -> dict[str, Any]:
    phase("import")
    t0 = time.perf_counter()
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import StateGraph  # noqa: F401  (the import a LangGraph program makes)

    t_import = time.perf_counter()
    phase("open")
    before = set(sys.modules)
    t_opening = time.perf_counter()
    saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
    saver.setup()
    t_open = time.perf_counter()
    opened = sorted(set(sys.modules) - before)
    phase("resume")
    from langgraph.types import Command

    result = lg_graph(saver).invoke(Command(resume=VALUE), _lg_config(thread), durability="sync")
    saver.conn.close()
    return _times(t0, t_import, t_opening, t_open, result, opened)


def _times(
    t0: float, t_import: float, t_opening: float, t_open: float, result: Any, opened: list[str]
) -> dict[str, Any]:
    if result != {"k": VALUE + "!"} or set(MARKS) != {"enter", "value", "last"}:
        raise AssertionError(f"the resumed run went wrong: {result}, marks {sorted(MARKS)}")
    packages: dict[str, int] = {}
    for name in opened:
        top = name.split(".")[0]
        packages[top] = packages.get(top, 0) + 1
    ms = {name: (t - t0) * 1e3 for name, t in MARKS.items()}
    return {
        "import": (t_import - t0) * 1e3,
        "open": (t_open - t_opening) * 1e3,
        "import_open": (t_import - t0 + t_open - t_opening) * 1e3,
        **{f"resume_{name}": value for name, value in ms.items()},
        **{
            f"resume_{name}_after_import": value - (t_import - t0) * 1e3
            for name, value in ms.items()
        },
        "open_imports": packages,
    }


def deps_measure() -> dict[str, Any]:
    """The floor of Mainspring's import + open: importing what it depends on (msgspec,
    anyio, and the asyncio backend anyio loads on first use), nothing of its own."""
    t0 = time.perf_counter()
    import anyio._backends._asyncio  # noqa: F401
    import msgspec  # noqa: F401

    return {"import_open": (time.perf_counter() - t0) * 1e3}


def main(argv: list[str]) -> None:
    command, side, path = argv[:3]
    if command == "deps":
        print(json.dumps(deps_measure()))
        return
    if command == "setup":
        key = lg_setup(path) if side == "langgraph" else asyncio.run(ms_setup(path))
        print(json.dumps({"key": key}))
        return
    key = argv[3]
    if side == "langgraph":
        out = lg_measure(path, key)
    elif side == "mainspring-anyio":
        import anyio  # the anyio program imported it; its event loop is already running

        out = anyio.run(ms_measure, path, key)
    else:
        out = asyncio.run(ms_measure(path, key))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
