"""Graph authoring: compile() validates and names the node and the fix; Mermaid export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypedDict

import pytest
from pydantic import BaseModel

from mainspring import END, START, Graph, GraphError, Retry, StateError, append, merge


class S(TypedDict, total=False):
    x: int
    log: Annotated[list[str], append]


def noop(s: object) -> None:
    return None


def linear(*names: str) -> Graph[S]:
    g = Graph(S)
    prev = START
    for n in names:
        g.node(n, noop)
        g.edge(prev, n)
        prev = n
    g.edge(prev, END)
    return g


def test_linear_graph_compiles_and_exports_mermaid() -> None:
    app = linear("a", "b").compile(name="lin")
    text = app.to_mermaid()
    assert text.startswith("flowchart TD\n")
    assert "__start__ --> n_a" in text
    assert "n_a --> n_b" in text
    assert "n_b --> __end__" in text
    assert app.to_mermaid() == text  # pure: same graph, same string


def test_branch_targets_show_as_dashed_edges() -> None:
    g = linear("a")
    g.node("b", noop)
    g.node("c", noop)
    g.edge("b", END)
    g.edge("c", END)
    g.branch("a", lambda s: "yes", {"yes": "b", "no": "c"})
    text = g.compile().to_mermaid()
    assert 'n_a -.->|"yes"| n_b' in text
    assert 'n_a -.->|"no"| n_c' in text


def test_unknown_edge_target_names_it_and_suggests() -> None:
    g = linear("classify")
    g.edge("classify", "refnd")
    g.node("refund", noop)
    g.edge("refund", END)
    g.edge(START, "refund")
    with pytest.raises(GraphError, match=r"no node named 'refnd'.*did you mean 'refund'"):
        g.compile()


def test_every_unknown_name_is_reported_in_one_error() -> None:
    g = linear("classify")
    g.node("refund", noop)
    g.edge("classify", "refnd")
    g.edge("refnud", END)
    with pytest.raises(GraphError) as raised:
        g.compile()
    message = str(raised.value)
    assert message.startswith("graph 'S' has 2 problems: (1) edge 'classify' -> 'refnd'")
    assert "(2) edge 'refnud' -> '__end__': there is no node named 'refnud'" in message
    assert message.count("did you mean 'refund'?") == 2
    assert "can never run" not in message  # the names explain it: fix them first


def test_node_without_way_out_is_refused() -> None:
    g = Graph(S)
    g.node("a", noop)
    g.edge(START, "a")
    with pytest.raises(GraphError, match=r"node 'a' has no way out; add g.edge\('a', END\)"):
        g.compile()


def test_unreachable_node_is_refused() -> None:
    g = linear("a")
    g.node("orphan", noop)
    g.edge("orphan", END)
    with pytest.raises(GraphError, match="node 'orphan' can never run"):
        g.compile()


def test_node_with_no_edges_is_one_error_that_says_so() -> None:
    g = linear("a")
    g.node("stray", noop)
    with pytest.raises(GraphError) as raised:
        g.compile()
    message = str(raised.value)
    assert message.startswith(
        "node 'stray' has no edges: nothing leads to it and it has no way out"
    )
    assert "g.edge(..., 'stray')" in message and "g.edge('stray', ...)" in message
    assert "remove it" in message
    assert "add g.edge('stray', END)" not in message and "can never run" not in message


def test_every_broken_node_is_reported_in_one_error() -> None:
    g = linear("a")
    g.node("stray", noop)  # no edges at all
    g.node("dead_end", noop)  # reached, but no way out
    g.edge("a", "dead_end")
    g.node("orphan", noop)  # a way out, but nothing leads to it
    g.edge("orphan", END)
    g.node("orphan2", noop)
    g.edge("orphan2", END)
    with pytest.raises(GraphError) as raised:
        g.compile()
    message = str(raised.value)
    assert message.startswith("graph 'S' has 3 problems: (1) node 'stray' has no edges")
    assert "(2) node 'dead_end' has no way out; add g.edge('dead_end', END)" in message
    assert (
        "(3) nodes 'orphan', 'orphan2' can never run: nothing leads to them from START" in message
    )
    assert "\n" not in message


def test_missing_entry_point_is_reported_with_the_other_problems() -> None:
    g = Graph(S)
    g.node("a", noop)
    g.node("stray", noop)
    g.edge("a", END)
    with pytest.raises(GraphError) as raised:
        g.compile()
    message = str(raised.value)
    assert "(1) graph 'S' has no entry point; add g.edge(START, 'a')" in message
    assert "(2) node 'stray' has no edges" in message


def test_missing_entry_point() -> None:
    g = Graph(S)
    g.node("a", noop)
    g.edge("a", END)
    with pytest.raises(GraphError, match=r"no entry point; add g.edge\(START, 'a'\)"):
        g.compile()


def test_duplicate_and_reserved_names() -> None:
    g = Graph(S)
    g.node("a", noop)
    with pytest.raises(GraphError, match="added twice"):
        g.node("a", noop)
    with pytest.raises(GraphError, match="reserved"):
        g.node(END, noop)


def test_branch_without_declared_targets_makes_everything_reachable() -> None:
    g = linear("a")
    g.node("b", noop)
    g.edge("b", END)
    g.branch("a", lambda s: "b")
    g.compile()


def test_join_target_is_reachable_when_all_sources_are() -> None:
    g = Graph(S)
    for n in ("a", "b", "c"):
        g.node(n, noop)
    g.edge(START, "a")
    g.edge(START, "b")
    g.edge(["a", "b"], "c")
    g.edge("c", END)
    text = g.compile().to_mermaid()
    assert "join_a_b__c" in text


def test_bad_state_types_are_refused() -> None:
    with pytest.raises(StateError, match="not a TypedDict, a dataclass or a pydantic model"):
        Graph(int)
    with pytest.raises(StateError, match="must be a class"):
        Graph("S")  # type: ignore[arg-type]


def test_reducer_conflicts_are_refused() -> None:
    class TwoReducers(TypedDict):
        log: Annotated[list[str], append, merge]

    with pytest.raises(StateError, match=r"TwoReducers.log has several reducers \(append, merge\)"):
        Graph(TwoReducers)

    class WrongType(TypedDict):
        count: Annotated[int, append]

    with pytest.raises(StateError, match="uses the append reducer but is typed"):
        Graph(WrongType)


def test_node_signature_is_checked() -> None:
    g = Graph(S)
    with pytest.raises(GraphError, match="takes no arguments"):
        g.node("z", lambda: None)
    with pytest.raises(GraphError, match="timeout must be a positive"):
        g.node("t", noop, timeout=0)
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        Retry(attempts=0)


def test_dataclass_and_pydantic_states() -> None:
    @dataclass
    class D:
        x: int = 0

    class P(BaseModel):
        x: int = 0

    for state in (D, P):
        g = Graph(state)
        g.node("a", noop)
        g.edge(START, "a")
        g.edge("a", END)
        assert g.compile().schema.kind in ("dataclass", "pydantic")


def test_decorator_forms() -> None:
    g = Graph(S)

    @g.node
    def first(s: S) -> None:
        return None

    @g.node(name="second", retry=Retry(attempts=2), timeout=1.5)
    async def _second(s: S) -> None:
        return None

    g.edge(START, "first")
    g.edge("first", "second")
    g.edge("second", END)
    app = g.compile()
    assert app.nodes["second"].retry == Retry(attempts=2)
    assert app.nodes["second"].timeout == 1.5
    assert app.nodes["second"].is_async


def test_one_function_as_several_named_nodes() -> None:
    g = Graph(S)
    for name in ("a", "b"):
        assert g.node(noop, name=name, timeout=2.0) is noop
    g.edge(START, "a")
    g.edge("a", "b")
    g.edge("b", END)
    app = g.compile()
    assert list(app.nodes) == ["a", "b"]
    assert app.nodes["b"].timeout == 2.0
    with pytest.raises(GraphError, match="a function, keyword options, or a name and a function"):
        g.node("a", noop, "extra")  # type: ignore[call-overload]
