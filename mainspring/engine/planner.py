"""Planning a run's next step from its fold: which nodes run next, and with what.

The superstep model: when every task of a step has finished, the step is closed (its
updates applied to the state) and the next step's tasks are the successors of its
nodes: static edges, routers' choices (``Send`` fans a node out with its own
argument), and joins whose sources have all finished (their progress is kept in the
journal, so a join survives a crash between its sources' steps).
"""

from __future__ import annotations

from typing import Any

from ..graph.compiled import CompiledGraph
from ..graph.types import END, START, Send
from .fold import NO_ARG, RunFold

Plan = list[tuple[str, Any]]  # (node, its Send argument or NO_ARG), in task order
JoinProgress = dict[str, list[str]]  # join key -> the sources that have finished


def next_step(app: CompiledGraph, fold: RunFold) -> tuple[Plan, JoinProgress | None]:
    """Close the fold's current step and plan the next (an empty plan: the run is done).

    Raises GraphError or StateError if a router fails or the step's updates collide.
    """
    if not fold.closed:
        fold.close_step()
    tasks = fold.tasks
    source = START if fold.step == -1 else tasks[0].node if len(tasks) == 1 else None
    if source is not None and not app.joins and source not in app.branches:
        # One node, static edges only: the common linear case.
        targets = app.static.get(source, ())
        if len(targets) == 1:
            return ([] if targets[0] == END else [(targets[0], NO_ARG)]), None
        return [(t, NO_ARG) for t in targets if t != END], None
    sources = [START] if fold.step == -1 else [t.node for t in tasks]
    view = fold.schema.view(fold.state) if app.branches else None
    plan: Plan = []
    seen: set[str] = set()
    for source in sources:
        for target in app.successors(source, view):
            if isinstance(target, Send):
                plan.append((target.node, target.arg))
            elif target != END and target not in seen:
                seen.add(target)
                plan.append((target, NO_ARG))
    if not app.joins:
        return plan, None
    done = set(sources)
    progress = {k: set(v) for k, v in fold.joins.items()}
    for join in app.joins:
        key = join.key
        have = progress.setdefault(key, set()) | (done & join.sources)
        if have >= join.sources:
            have = set()
            if join.target != END and join.target not in seen:
                seen.add(join.target)
                plan.append((join.target, NO_ARG))
        progress[key] = have
    return plan, {k: sorted(v) for k, v in progress.items()}
