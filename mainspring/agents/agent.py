"""An agent: a model, its instructions, its tools, the agents it may hand off to, and how
it ends (text, or a structured output), compiled to an ordinary Mainspring graph.

``Agent(name, model, instructions, tools=[...], output_type=None, handoffs=[...],
max_turns=10, model_options={...})``. ``agent.graph`` is the compiled graph (a model
node and a tools node in a loop; see ``loop.py``), so an agent runs alone, as a node or
subgraph of a larger graph, and is inspected like any graph. ``await agent.run(runtime,
"question", thread="t1")`` runs it (``running.py``), continuing the thread's conversation.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from ..engine.queueing import QueueOptions
from ..tools.tool import Tool, tool
from .errors import AgentError
from .memory import AgentMemory, agent_memory
from .running import resume as resume_run
from .running import run as run_agent
from .running import scoped, thread_messages
from .running import start as start_run
from .topology import AgentTool, reachable

if TYPE_CHECKING:
    from ..engine.handle import RunHandle
    from ..engine.runtime import Runtime
    from ..engine.sync import SyncRuntime, SyncTenantRuntime
    from ..engine.tenancy import AdminRuntime, TenantRuntime
    from ..graph.compiled import CompiledGraph
    from ..models.messages import Message
    from ..tools.toolbox import Toolbox
    from .running import AgentResult

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,52}")  # transfer_to_<name> must stay a valid tool name

Prompt = "str | Message | Sequence[Message | Mapping[str, Any]]"


class Agent:
    """A ready agent loop on the graph engine. See the module's docstring."""

    def __init__(
        self,
        name: str,
        model: str,
        instructions: str = "",
        *,
        tools: Iterable[Tool | AgentTool | Agent | Callable[..., Any]] = (),
        output_type: Any = None,
        handoffs: Iterable[Agent] = (),
        max_turns: int = 10,
        model_options: Mapping[str, Any] | None = None,
        description: str = "",
        ref: str | None = None,
        memory: AgentMemory | bool | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise AgentError(
                f"agent name {name!r}: use 1-52 letters, digits, '_' or '-' (it becomes part "
                "of tool names such as transfer_to_<name>)"
            )
        if not isinstance(model, str) or not model:
            raise AgentError(f"agent {name!r}: model must be a gateway model name or alias")
        if max_turns < 1:
            raise AgentError(f"agent {name!r}: max_turns={max_turns}; give at least 1")
        options = dict(model_options or {})
        for reserved in ("tools", "output"):
            if reserved in options:
                raise AgentError(
                    f"agent {name!r}: model_options may not set {reserved!r}; give the agent "
                    f"{'tools=' if reserved == 'tools' else 'output_type='} instead"
                )
        self.name = name
        self.model = model
        self.instructions = instructions
        self.description = description
        self.output_type = output_type
        self.max_turns = max_turns
        self.model_options = options
        self.handoffs: list[Agent] = list(handoffs)
        self.tools: list[Tool | AgentTool] = [_as_tool(t) for t in tools]
        self.ref = ref
        self.memory = agent_memory(memory)  # recall before a turn, remember after it
        self._graph: CompiledGraph | None = None
        self.prepared: weakref.WeakSet[AdminRuntime] = weakref.WeakSet()  # runtimes that know it

    def __repr__(self) -> str:
        return f"<Agent {self.name}>"

    # -- composition ------------------------------------------------------------------

    def as_tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        max_turns: int | None = None,
    ) -> AgentTool:
        """This agent as another agent's tool (a child run; ``max_turns`` its own limit)."""
        return AgentTool(self, name=name, description=description, max_turns=max_turns)

    @property
    def graph(self) -> CompiledGraph:
        """The agent compiled to a graph (built on first use; change ``tools`` and
        ``handoffs`` before that)."""
        if self._graph is None:
            from .loop import build_graph

            self._graph = build_graph(self)
        return self._graph

    def compile(self) -> CompiledGraph:
        return self.graph

    @property
    def toolbox(self) -> Toolbox:
        """A toolbox of every tool this agent may reach (its own, its handoffs' and those of
        the agents it uses as tools): ``Runtime(..., tools=agent.toolbox)``."""
        from ..tools.toolbox import Toolbox

        return Toolbox(self.all_tools())

    def all_tools(self) -> list[Tool]:
        """The plain tools this agent and every agent it reaches may call, once each."""
        found: dict[str, Tool] = {}
        for agent in reachable(self, through_tools=True):
            for t in agent.tools:
                if isinstance(t, Tool):
                    known = found.setdefault(t.name, t)
                    if known is not t and known.fn is not t.fn:
                        raise AgentError(
                            f"two different tools are named {t.name!r} (in agent {agent.name!r} "
                            "and another); give one of them name="
                        )
        return list(found.values())

    # -- running (running.py) ---------------------------------------------------------

    async def start(
        self,
        runtime: Runtime | TenantRuntime,
        input: Any,
        *,
        thread: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        **queued: Unpack[QueueOptions],
    ) -> RunHandle:
        """Start a run in the background (follow it with ``handle.events()``); with
        ``queue=...`` (and ``priority``, ``delay``, ``concurrency_key``) a worker of that
        queue drives it (``mainspring worker``)."""
        return await start_run(
            self, runtime, input, thread=thread, run_id=run_id, metadata=metadata, **queued
        )

    async def run(
        self,
        runtime: Runtime | TenantRuntime,
        input: Any,
        *,
        thread: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentResult:
        """Run until the agent answers (or parks on an approval): an ``AgentResult``.

        ``input`` is the user's message (a string, a Message, or messages); with
        ``thread=``, the conversation of the thread's last finished run comes first.
        """
        return await run_agent(
            self, runtime, input, thread=thread, run_id=run_id, metadata=metadata
        )

    async def resume(
        self,
        runtime: Runtime | TenantRuntime,
        run_id: str,
        value: Any = True,
        *,
        interrupt_id: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> AgentResult:
        """Answer a parked run's approval (``True``, ``{"approve": False, "reason": ...}``
        or ``{"args": {...}}``) or pick up a run a dead process left, and run it on."""
        return await resume_run(
            self, runtime, run_id, value, interrupt_id=interrupt_id, values=values
        )

    def run_sync(
        self,
        runtime: SyncRuntime | SyncTenantRuntime,
        input: Any,
        *,
        thread: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentResult:
        """``run`` for scripts, through ``SyncRuntime``'s portal."""
        rt = runtime.runtime
        result: AgentResult = runtime._call(
            lambda: self.run(rt, input, thread=thread, run_id=run_id, metadata=metadata)
        )
        return result

    async def history(
        self, runtime: Runtime | TenantRuntime, thread: str, *, tenant: str | None = None
    ) -> list[Message]:
        """The conversation of ``thread`` so far (its last finished run's messages): the
        thread of the view's tenant, or on a Runtime of ``tenant`` (default: the default
        tenant)."""
        from .state import as_message

        view = scoped(runtime, None if tenant is None else {"tenant": tenant})
        return [as_message(m) for m in await thread_messages(self, view, thread)]


def _as_tool(item: Tool | AgentTool | Agent | Callable[..., Any]) -> Tool | AgentTool:
    if isinstance(item, Tool | AgentTool):
        return item
    if isinstance(item, Agent):
        return item.as_tool()
    if callable(item):
        return tool(item)
    raise AgentError(
        f"{item!r} is not a tool: give a @tool, a function, an Agent or agent.as_tool()"
    )
