"""Running an agent: its graph started on a runtime, a thread's conversation continued,
approvals answered, and the run's end read as an :class:`AgentResult`.

A thread's history is its runs: a new run of ``thread="t1"`` starts from the messages
of the thread's last finished run of this agent (``Runtime.list_runs(thread=...)``
and that run's state) followed by the new input, so every run's journal holds the
whole conversation it saw. A thread is one tenant's: its runs are looked up through
the tenant's view (``TenantRuntime``, or the tenant ``metadata`` names on a Runtime),
so tenant B's ``"t1"`` never continues tenant A's. A thread whose last run is still going or waiting for an
approval must be resumed (or cancelled) first: two open runs would fork it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack

from ..engine.queueing import QueueOptions
from ..engine.tenancy import AdminRuntime, TenantRuntime
from ..errors import RunFailedError
from ..status import CANCELLED, FAILED, RunStatus
from ..store import tenant_of
from ..tools.toolbox import Toolbox
from .errors import AgentError, MaxTurnsExceeded
from .state import as_message, final_text, message_dicts
from .structured import revive
from .topology import AgentLike, handoff_agents

if TYPE_CHECKING:
    from ..engine.handle import RunHandle
    from ..engine.outcome import PendingInterrupt, RunOutcome
    from ..engine.runtime import Runtime
    from ..models.messages import Message


class AgentResult:
    """Where an agent's run stands: its answer (``text``, ``output``), or the approvals it
    waits for (``status`` ``interrupted``, ``approvals``)."""

    __slots__ = ("_messages", "agent", "approvals", "output", "run_id", "status", "turns")

    def __init__(
        self,
        run_id: str,
        status: RunStatus,
        messages: list[dict[str, Any]],
        output: Any,
        agent: str,
        turns: int,
        approvals: list[PendingInterrupt],
    ) -> None:
        self.run_id = run_id
        self.status = status
        self._messages = messages
        self.output = output  # an instance of the agent's output_type, or None
        self.agent = agent  # the agent that spoke last (after handoffs)
        self.turns = turns
        self.approvals = approvals  # what a person must answer (agent.resume) when parked

    def __repr__(self) -> str:
        return f"<AgentResult {self.run_id} {self.status.value}: {self.text[:40]!r}>"

    @property
    def text(self) -> str:
        """The final answer's text (the last assistant message's)."""
        return final_text(self._messages)

    @property
    def messages(self) -> list[Message]:
        """The whole conversation of the run (the thread's earlier turns included)."""
        return [as_message(m) for m in self._messages]

    @property
    def parked(self) -> bool:
        return self.status is RunStatus.INTERRUPTED


def scoped(runtime: Runtime | TenantRuntime, metadata: dict[str, Any] | None) -> TenantRuntime:
    """The tenant's view a run is started and its thread looked up through: the view given,
    or the runtime seen as the tenant ``metadata`` names (the default tenant if none)."""
    if isinstance(runtime, TenantRuntime):
        return runtime
    return runtime.tenant(tenant_of(metadata))


def prepare(agent: AgentLike, runtime: Runtime | TenantRuntime) -> None:
    """Make the agent's graph known to the runtime, and its tools to the runtime's toolbox
    (once per runtime)."""
    base = runtime.runtime if isinstance(runtime, TenantRuntime) else runtime
    if base in agent.prepared:
        return
    _prepare(agent, base)
    agent.prepared.add(base)


def _prepare(agent: AgentLike, runtime: AdminRuntime) -> None:
    graph = agent.graph
    if not runtime.loader.knows(graph):
        runtime.register(graph)
    tools = agent.all_tools()
    if not tools:
        return
    box = runtime.services.tools
    if box is None:
        raise AgentError(
            f"agent {agent.name!r} has tools but the runtime has no toolbox; open it with "
            f"Runtime.open(url, models=..., tools=agent.toolbox)"
        )
    if not isinstance(box, Toolbox):
        return  # another ToolCapability: it answers for its own names
    for t in tools:
        if t.name not in box:
            box.add(t)
        elif (held := box.get(t.name)) is not t and held.fn is not t.fn:
            raise AgentError(
                f"the runtime's toolbox holds another tool named {t.name!r} than agent "
                f"{agent.name!r} uses; rename one of them (name=)"
            )


async def thread_messages(
    agent: AgentLike, runtime: TenantRuntime, thread: str
) -> list[dict[str, Any]]:
    """The messages of the tenant's ``thread``'s last finished run of ``agent`` ([] for a
    new thread)."""
    graph = agent.graph
    for record in await runtime.list_runs(thread=thread, graph=graph.name, limit=50):
        if record.parent_run_id is not None:
            continue
        if record.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED):
            raise AgentError(
                f"thread {thread!r} has run {record.run_id!r} still {record.status.value}; "
                f"resume it (agent.resume) or cancel it before the thread goes on"
            )
        if record.status is RunStatus.FINISHED:
            view = await runtime.state(record.run_id, graph=graph)
            return list(view.values.get("messages") or ())
    return []


async def _opening(
    agent: AgentLike,
    runtime: Runtime | TenantRuntime,
    input: Any,
    thread: str | None,
    metadata: dict[str, Any] | None,
) -> tuple[TenantRuntime, dict[str, Any]]:
    """The view a new run starts through (the metadata's tenant) and its first state: the
    thread's conversation so far, then ``input``."""
    prepare(agent, runtime)
    view = scoped(runtime, metadata)
    messages = message_dicts(input)
    if thread is not None:
        messages = [*await thread_messages(agent, view, thread), *messages]
    return view, {"messages": messages}


async def start(
    agent: AgentLike,
    runtime: Runtime | TenantRuntime,
    input: Any,
    *,
    thread: str | None = None,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **queued: Unpack[QueueOptions],
) -> RunHandle:
    view, first = await _opening(agent, runtime, input, thread, metadata)
    return await view.start(
        agent.graph, first, run_id=run_id, thread=thread, metadata=metadata, **queued
    )


async def run(
    agent: AgentLike,
    runtime: Runtime | TenantRuntime,
    input: Any,
    *,
    thread: str | None = None,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AgentResult:
    view, first = await _opening(agent, runtime, input, thread, metadata)
    outcome = await view.run_outcome(
        agent.graph, first, run_id=run_id, thread=thread, metadata=metadata
    )
    return result_of(agent, outcome)


async def resume(
    agent: AgentLike,
    runtime: Runtime | TenantRuntime,
    run_id: str,
    value: Any,
    *,
    interrupt_id: str | None = None,
    values: dict[str, Any] | None = None,
) -> AgentResult:
    prepare(agent, runtime)
    handle = await runtime.resume(
        run_id, value, interrupt_id=interrupt_id, values=values, graph=agent.graph
    )
    return result_of(agent, await handle.wait())


def result_of(agent: AgentLike, outcome: RunOutcome) -> AgentResult:
    """The run's outcome as an AgentResult; a failed run raises (MaxTurnsExceeded for one
    that hit its limit)."""
    if outcome.status is FAILED:
        error = outcome.error or {}
        if error.get("type") == MaxTurnsExceeded.__name__:
            raise MaxTurnsExceeded(str(error.get("message", "")))
        raise RunFailedError(outcome.run_id, error)
    if outcome.status is CANCELLED:
        from ..errors import RunCancelledError

        raise RunCancelledError(f"run {outcome.run_id!r} was cancelled")
    state: Mapping[str, Any] = outcome.state or {}
    speaker = state.get("agent") or agent.name
    output_type = _output_type(agent, speaker)
    return AgentResult(
        outcome.run_id,
        outcome.status,
        list(state.get("messages") or ()),
        revive(output_type, state.get("output")),
        speaker,
        int(state.get("turns") or 0),
        list(outcome.interrupts),
    )


def _output_type(agent: AgentLike, speaker: str) -> Any:
    if speaker == agent.name:
        return agent.output_type

    found = handoff_agents(agent).get(speaker)
    return found.output_type if found is not None else None
