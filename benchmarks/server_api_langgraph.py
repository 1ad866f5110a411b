"""The graph ``langgraph dev`` serves for ``server_api.py``: W1's ten trivial nodes in a line.

It imports LangGraph only (no Mainspring, nothing of the suite), so it loads in the
environment ``langgraph-cli[inmem]`` lives in, which may be another venv (see
``server_api.py``). It is ``graphs.lg_linear()`` spelled out.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

STEPS = 10  # graphs.LINEAR_STEPS


class Linear(TypedDict, total=False):
    k: str


def _trivial(state: Any) -> dict[str, str]:
    return {"k": "v"}


def _linear() -> Any:
    g = StateGraph(Linear)
    previous = START
    for i in range(STEPS):
        g.add_node(f"n{i}", _trivial)
        g.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    g.add_edge(previous, END)
    return g.compile()


graph = _linear()
