"""The agent loop as a graph: a model node, a tools node, and the router between them.

    START -> model --(tool calls: one Send per call)--> tools ----> model
                   \\-(a call to an agent used as a tool)-> agent:<name> (subgraph) -> model
                   \\-(no tool calls)--------------------> END

Every call of one model turn is a task of ONE superstep (they run concurrently) and
their results are appended in the order of the calls, whatever order they finished
in (a superstep applies its updates in task order). A tool's bad arguments, failure or
refusal becomes the call's tool result (its ``for_model()`` text), never an exception
that kills the run; a tool that needs approval parks the run through the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine.context import Context
from ..errors import EffectDeniedError, EffectError, GraphError
from ..graph.builder import Graph
from ..graph.compiled import CompiledGraph
from ..graph.types import END, START, Send
from ..models.messages import Message, ToolSpec, system
from ..tools.errors import NeedsHuman, ToolError
from .errors import AgentError, MaxTurnsExceeded
from .memory import recall_note, remember_turn, with_note
from .state import (
    AgentState,
    as_message,
    final_text,
    message_dicts,
    to_dict,
    tool_calls_of,
    tool_result_dict,
)
from .structured import final_output
from .topology import AgentLike, AgentTool, handoff_agents, names

_CONVERTED = 4096  # messages kept converted per agent graph
_building: set[int] = set()  # agents whose graphs are being built (an as_tool cycle guard)


class Plan:
    """What one agent's turns need, worked out once: its model call and its tools."""

    def __init__(self, agent: AgentLike, node_of: Mapping[int, str]) -> None:
        self.agent = agent
        self.name = agent.name
        self.system = [system(agent.instructions)] if agent.instructions else []
        self.tools = {t.name: t for t in agent.tools if not isinstance(t, AgentTool)}
        self.agent_tools = {
            t.name: (node_of[id(t.agent)], t) for t in agent.tools if isinstance(t, AgentTool)
        }
        self.handoffs = {f"transfer_to_{h.name}": h.name for h in agent.handoffs}
        specs = [t.spec() for t in self.tools.values()]
        specs += [
            ToolSpec(n, t.description, t.parameters) for n, (_, t) in self.agent_tools.items()
        ]
        specs += [_handoff_spec(h) for h in agent.handoffs]
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise AgentError(f"agent {agent.name!r} offers two tools named {spec.name!r}")
            seen.add(spec.name)
        self.callable = sorted(seen)
        self.options: dict[str, Any] = dict(agent.model_options)
        if specs:
            self.options["tools"] = specs
        elif agent.output_type is not None:  # no tools: every answer is the final one
            self.options["output"] = agent.output_type


def _handoff_spec(target: AgentLike) -> ToolSpec:
    about = target.description or f"the agent {target.name!r}"
    return ToolSpec(
        f"transfer_to_{target.name}",
        f"Hand the conversation over to {about}; it answers from then on.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    )


def build_graph(root: AgentLike) -> CompiledGraph:
    """Compile ``root`` (and the agents it hands off to) into one graph."""
    if id(root) in _building:
        raise AgentError(
            f"agent {root.name!r} uses itself as a tool, directly or through other agents; "
            "an agent used as a tool cannot lead back to its caller (use a handoff)"
        )
    _building.add(id(root))
    try:
        return _build(root)
    finally:
        _building.discard(id(root))


def _build(root: AgentLike) -> CompiledGraph:
    agents = handoff_agents(root)
    children: dict[int, tuple[str, AgentLike]] = {}
    for agent in agents.values():
        for t in agent.tools:
            if isinstance(t, AgentTool) and id(t.agent) not in children:
                children[id(t.agent)] = (f"agent:{t.agent.name}", t.agent)
    node_names = [n for n, _ in children.values()]
    if len(set(node_names)) != len(node_names):
        raise AgentError(f"agent {root.name!r} uses two different agents of the same name as tools")
    node_of = {key: node for key, (node, _) in children.items()}
    plans = {name: Plan(agent, node_of) for name, agent in agents.items()}
    loop = _Loop(root, plans)
    g = Graph(AgentState, name=f"agent:{root.name}")
    g.node("model", loop.model)
    g.node("tools", loop.tools)
    for node, child in children.values():
        g.node(node, child.graph, input=_child_input, output=_child_output)
        g.edge(node, "model")
    g.edge(START, "model")
    g.branch("model", loop.route, ["tools", END, *node_names])
    g.edge("tools", "model")
    try:
        return g.compile(ref=root.ref)
    except GraphError as exc:
        raise AgentError(f"agent {root.name!r} does not compile: {exc}") from exc


class _Loop:
    """The nodes and the router of one agent graph (closures over its plans)."""

    def __init__(self, root: AgentLike, plans: dict[str, Plan]) -> None:
        self.root = root
        self.plans = plans
        # The state's message dicts as Messages, by identity (the dict is kept with its
        # Message, so its id cannot be reused while cached): a conversation's messages are
        # converted once, not on every turn.
        self._converted: dict[int, tuple[Any, Message]] = {}

    def messages(self, plan: Plan, state: Mapping[str, Any]) -> list[Message]:
        out = list(plan.system)
        cache = self._converted
        for data in state.get("messages") or ():
            hit = cache.get(id(data))
            if hit is None or hit[0] is not data:
                hit = self.keep(data, as_message(data))
            out.append(hit[1])
        return out

    def keep(self, data: Any, message: Message) -> tuple[Any, Message]:
        """Remember ``message`` as the conversion of the state's dict ``data``."""
        cache = self._converted
        if len(cache) >= _CONVERTED:
            cache.clear()
        hit = cache[id(data)] = (data, message)
        return hit

    def plan(self, state: Mapping[str, Any]) -> Plan:
        return self.plans[state.get("agent") or self.root.name]

    async def model(self, state: AgentState, ctx: Context) -> dict[str, Any]:
        plan = self.plan(state)
        turns = state.get("turns") or 0
        limit = state.get("max_turns") or self.root.max_turns
        if turns >= limit:
            message = (
                f"agent {self.root.name!r} reached its limit of {limit} model turns without "
                "a final answer; raise max_turns, or give the agent clearer instructions or tools"
            )
            if state.get("caller"):  # as a tool: the calling model is told, and goes on
                return {"messages": [_assistant(f"error: {message}")]}
            raise MaxTurnsExceeded(message)
        messages = self.messages(plan, state)
        update: dict[str, Any] = {"turns": turns + 1}
        remembers = plan.agent.memory
        if remembers is not None:
            note = state.get("recalled")
            if note is None:  # the turn's first call: recall, and keep the note for the rest
                note = update["recalled"] = await recall_note(
                    ctx, remembers, plan.name, state.get("messages") or ()
                )
            messages = with_note(messages, note, len(plan.system))
        response = await ctx.model(plan.agent.model, messages, **plan.options)
        answer = to_dict(response.message)
        update["messages"] = [answer]
        if remembers is not None and not response.tool_calls:
            await remember_turn(
                ctx, remembers, plan.name, state.get("messages") or (), response.text or ""
            )
        if response.tool_calls or plan.agent.output_type is None:
            # The next turn sends the answer as the Message it came as, not converted back
            # from its dict: a tool call's message costs msgspec.convert ~15k instructions
            # (callgrind, W12 2026-12-07).
            self.keep(answer, response.message)
            return update
        output, extra = await final_output(ctx, plan.agent, messages, response, plan.options)
        update["output"] = output
        if extra is not None:  # the answer asked again with output=: it replaces the prose
            update["messages"] = [extra]
        return update

    def route(self, state: AgentState) -> Any:
        messages = state.get("messages") or ()
        calls = tool_calls_of(messages[-1]) if messages else []
        if not calls:
            return END
        plan = self.plan(state)
        sends: list[Send] = []
        handing_off = False
        for call in calls:
            name, args = call.get("name", ""), call.get("arguments") or {}
            child = plan.agent_tools.get(name)
            if child is not None and set(args) == {"input"} and isinstance(args["input"], str):
                sends.append(
                    Send(child[0], {"id": call.get("id", ""), "name": name,
                                    "input": args["input"], "max_turns": child[1].max_turns})
                )  # fmt: skip
                continue
            payload = {
                "id": call.get("id", ""),
                "name": name,
                "arguments": args,
                "agent": plan.name,
            }
            if name in plan.handoffs:
                payload["handoff"] = not handing_off  # only a turn's first transfer is made
                handing_off = True
            sends.append(Send("tools", payload))
        return sends

    async def tools(self, call: dict[str, Any], ctx: Context) -> dict[str, Any]:
        plan = self.plans[call["agent"]]
        call_id, name = str(call["id"]), str(call["name"])
        target = plan.handoffs.get(name)
        if target is not None:
            if not call.get("handoff"):
                content = f"error: only the first transfer of a turn is made; {name} was not"
                return {"messages": [tool_result_dict(call_id, name, content)]}
            content = f"Transferred to agent {target!r}; it answers from here."
            return {"messages": [tool_result_dict(call_id, name, content)], "agent": target}
        if name in plan.agent_tools:
            content = (
                f"error: invalid arguments for tool {name!r}: give exactly one argument, "
                '"input", a string saying what to ask. Call it again'
            )
        elif name not in plan.tools:
            content = (
                f"error: there is no tool named {name!r}; you can call: {names(plan.callable)}"
            )
        else:
            content = await _call_tool(ctx, name, call["arguments"])
        return {"messages": [tool_result_dict(call_id, name, content)]}


async def _call_tool(ctx: Context, name: str, arguments: Any) -> Any:
    """The tool's result, or what went wrong in words the model can act on."""
    if type(arguments) is not dict and not isinstance(arguments, Mapping):  # dict: no ABC check
        return f"error: the arguments of {name!r} must be a JSON object; call it again"
    try:
        return await ctx.tool(name, **arguments)
    except EffectDeniedError as denied:
        return f"error: the call of {name!r} was not made: {denied.reason}"
    except NeedsHuman as needs:  # the tool's fallback is a person: park until they answer
        answer = await ctx.interrupt({"needs_human": needs.payload()})
        return answer if answer is not None else needs.for_model()
    except ToolError as error:
        return error.for_model()
    except EffectError as error:  # a recorded tool error whose type could not be rebuilt
        return f"error: {error}"


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _child_input(call: Mapping[str, Any]) -> dict[str, Any]:
    """An agent tool's call as its child run's input."""
    return {
        "messages": message_dicts(str(call["input"])),
        "caller": {"id": str(call["id"]), "name": str(call["name"])},
        "max_turns": call.get("max_turns"),
    }


def _child_output(out: Mapping[str, Any]) -> dict[str, Any]:
    """A child run's final state as the calling tool's result."""
    caller = out.get("caller") or {}
    output = out.get("output")
    content = output if output is not None else final_text(out.get("messages") or ())
    return {
        "messages": [
            tool_result_dict(str(caller.get("id", "")), str(caller.get("name", "")), content)
        ]
    }
