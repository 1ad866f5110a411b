"""The toolbox: the tools a runtime's nodes (and agents) may call, as journaled effects.

``Runtime(store, tools=Toolbox([search, lookup_order, ...]))``; in a node,
``await ctx.tool("lookup_order", order_id="A-17")`` is the effect ``tool:<name>``:
the gate decides first (policy, budgets, the approvals of tools that need one), the
arguments are validated, the call is bounded (timeout, retries on declared-retryable
errors, limits, circuit breaker, fallback), and its result is validated and committed
before the node sees it. A resumed run gets the recorded result without a call.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..engine.capabilities import NodeCalls
from ..engine.effects import EffectCall, current_key
from ..engine.gate import Approve, Deny, Effect
from ..guard.secrets.scrub import HANDED, scrubber_for
from ._calling import calling as _calling
from .background import Background
from .errors import ToolFailedError, UnknownToolError
from .resilience import Resilience
from .tool import Tool, ToolContext, tool

if TYPE_CHECKING:
    from ..engine.runtime import Runtime
    from .mcp_client import MCPServer

SecretSource = Callable[[str], str | None] | Mapping[str, str]  # a SecretProvider is one


class Toolbox:
    """Tools by name. ``tools`` are ``Tool``s or plain functions (made tools with defaults);
    ``secrets`` (a ``SecretProvider`` from :mod:`mainspring.guard.secrets`, a mapping or a
    function of a name; the environment by default) gives each tool the secrets it
    declared, and only those, looked up on each call (a rotated secret is used at once);
    their values are scrubbed from what the call records and shows (docs/secrets.md)."""

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        secrets: SecretSource | None = None,
        resilience: Resilience | None = None,
        hooks: Sequence[object] = (),
    ) -> None:
        self._tools: dict[str, Tool] = {}
        self._secrets = secrets
        self.resilience = resilience if resilience is not None else Resilience()
        self._effect_fns: dict[str, Callable[..., Any]] = {}
        self._guard = DangerousTools(self)
        self._hooks = (self._guard, ToolApprovals(self), *hooks)
        self._hooks_given: bool | None = None  # whether gate_hooks handed out the secrets hook
        self.background = Background()
        for t in tools:
            self.add(t)

    def add(self, item: Tool | Callable[..., Any]) -> Tool:
        made = item if isinstance(item, Tool) else tool(item)
        if made.name in self._tools:
            raise ValueError(f"two tools are named {made.name!r}; give one of them name=")
        if made.secrets and self._hooks_given is False:
            raise ValueError(
                f"tool {made.name!r} declares secrets, but this toolbox's gate hooks were taken "
                "by a runtime without the hook that keeps secrets out of the journal; add "
                "tools that declare secrets before the runtime is made"
            )
        self._tools[made.name] = made
        return made

    def add_mcp(self, server: MCPServer, **options: Any) -> list[Tool]:
        """Add the tools of a connected MCP server (``async with MCPServer.stdio(...)``);
        ``options`` are ``Tool`` options for each (``needs_approval=``, ``retry=``, ...)."""
        return [self.add(t) for t in server.tools(**options)]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool:
        found = self._tools.get(name)
        if found is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(f"no tool named {name!r}; the toolbox holds: {known}")
        return found

    def specs(self, names: Iterable[str] | None = None) -> list[Any]:
        """The definitions of the tools (all, or those named) for a model call's ``tools=``."""
        chosen = self._tools.values() if names is None else [self.get(n) for n in names]
        return [t.spec() for t in chosen]

    def facts(self, name: str) -> dict[str, Any] | None:
        """What a policy may know of the tool ``name`` (None: not in this box): whether it is
        dangerous, asks for approval, and the names (never the values) of its secrets."""
        found = self._tools.get(name)
        if found is None:
            return None
        approval = found.needs_approval
        return {
            "dangerous": found.dangerous,
            "needs_approval": approval if isinstance(approval, bool) else "conditional",
            "secrets": list(found.secrets),
        }

    @property
    def gate_hooks(self) -> Sequence[object]:
        """The approvals hook, the given hooks, and (only when a tool declares secrets, so
        other toolboxes pay nothing) the hook scrubbing secret values from arguments."""
        if not any(t.secrets for t in self._tools.values()):
            self._hooks_given = bool(self._hooks_given)
            return self._hooks
        from ..guard.secrets.hook import SecretArgs

        self._hooks_given = True
        return (*self._hooks, SecretArgs(self.secrets_of))

    async def attach(self, runtime: Runtime) -> None:
        """Called by the runtime as it opens: background calls run and resume through it, and
        dangerous tools are left to a policy in its gate that governs them, if there is one."""
        governed = any(getattr(h, "governs_dangerous_tools", False) for h in runtime.gate.hooks)
        self._guard.governed_by(governed)
        await self.background.attach(runtime)

    # -- background calls: ctx.tool_async, ctx.wait_tool --------------------------------

    async def start_in_run(
        self, node: NodeCalls, name: str, args: Mapping[str, Any]
    ) -> dict[str, str]:
        self.get(name).validate(args)  # refused now, not in the background
        token = _calling.set(node)
        try:
            return await self.background.start(node, name, dict(args))
        finally:
            _calling.reset(token)

    async def background_result(self, call_id: str) -> tuple[bool, Any]:
        return await self.background.result(call_id)

    # -- in a run: ctx.tool ------------------------------------------------------------

    async def call_in_run(self, node: NodeCalls, name: str, args: Mapping[str, Any]) -> Any:
        self.get(name)  # an unknown name fails before anything is journaled
        fn = self._effect_fns.get(name)
        if fn is None:  # one function per tool: the engine caches what it learns of each
            fn = self._effect_fns[name] = _effect_function(weakref.ref(self), name)
        token = _calling.set(node)
        try:
            return await node.effect(EffectCall("tool", f"tool:{name}", fn, (), dict(args)))
        finally:
            _calling.reset(token)

    def _effect(self, tool_name: str, args: dict[str, Any]) -> Awaitable[Any]:
        """The effect's work: ``call`` with the arguments as the gate let them through, its
        awaitable handed back for the effect function to await (two coroutine layers
        fewer than awaiting ``call``; with the rest of that change, ~20k instructions less a
        call in W12 by callgrind, 2026-12-07)."""
        found = self.get(tool_name)
        context = self._context(tool_name, _calling.get())
        if context.secrets:  # a tool holding secrets: its result and errors scrubbed
            return self._scrubbed(found, args, context)
        checked = found.validate(args)
        return self.resilience.call(found, checked, context, toolbox=self)

    # -- the one path of a call ----------------------------------------------------------

    async def call(
        self, name: str, args: Mapping[str, Any], context: ToolContext | None = None
    ) -> Any:
        """Validate, call under the tool's bounds, validate the result (also outside runs)."""
        found = self.get(name)
        ctx = context if context is not None else self._context(name, None)
        if ctx.secrets:
            return await self._scrubbed(found, args, ctx)
        checked = found.validate(args)
        return await self.resilience.call(found, checked, ctx, toolbox=self)

    async def _scrubbed(self, found: Tool, args: Mapping[str, Any], ctx: ToolContext) -> Any:
        """A call of a tool holding secrets: their values replaced by ``[secret:NAME]`` in
        its result and its error (raised without the chain that may quote them)."""
        scrub = scrubber_for(ctx.secrets)
        try:
            result = await self.resilience.call(found, found.validate(args), ctx, toolbox=self)
        except Exception as exc:
            failure = scrub.exception(exc, ToolFailedError)
            if failure is exc:
                raise
        else:
            return scrub.value(result)
        raise failure  # outside the except block: no __context__ quoting the original

    def secrets_of(self, name: str) -> dict[str, str]:
        """The values of the secrets tool ``name`` declared, as its next call gets them."""
        found = self._tools.get(name)
        return self._secrets_for(found.secrets) if found is not None else {}

    def context_for(self, name: str, context: ToolContext) -> ToolContext:
        """``context`` for another tool of this box (a fallback): its own name and secrets."""
        secrets = self._secrets_for(self.get(name).secrets)
        return replace(context, tool=name, secrets=secrets, attempt=1)

    def _context(self, name: str, node: NodeCalls | None) -> ToolContext:
        declared = self._tools[name].secrets
        secrets = self._secrets_for(declared) if declared else {}
        if node is None:
            return ToolContext(name, current_key.get(), secrets=secrets)
        meta = node.metadata
        tenant, user = meta.get("tenant"), meta.get("user")
        return ToolContext(
            name,
            current_key.get(),
            node.run_id,
            node.thread,
            None if tenant is None else str(tenant),
            None if user is None else str(user),
            secrets=secrets,
        )

    def _secrets_for(self, declared: Sequence[str]) -> dict[str, str]:
        secrets = {s: v for s in declared if (v := self._secret(s)) is not None}
        if secrets:
            HANDED.add(secrets)  # for the sinks that cannot tell which call wrote (logs)
        return secrets

    def _secret(self, name: str) -> str | None:
        source = self._secrets
        if source is None:
            import os

            return os.environ.get(name)
        return source.get(name) if isinstance(source, Mapping) else source(name)


class DangerousTools:
    """The gate hook that denies a tool marked ``dangerous`` when no policy governs it: a
    runtime whose gate holds a policy (``mainspring.guard.policy.Policy``) leaves the call
    to it (denied unless a rule explicitly allows it); without one, it is always denied."""

    name = "dangerous-tools"

    def __init__(self, toolbox: Toolbox) -> None:
        self._toolbox = toolbox
        self._governed: bool | None = None  # None: not attached to a runtime yet

    def governed_by(self, policy: bool) -> None:
        # A toolbox shared by runtimes steps aside only if every one of them has a policy.
        self._governed = policy if self._governed is None else self._governed and policy

    def before(self, effect: Effect) -> Deny | None:
        if self._governed or effect.kind != "tool" or not effect.name.startswith("tool:"):
            return None
        found = self._toolbox._tools.get(effect.name[len("tool:") :])
        if found is None or not found.dangerous:
            return None
        return Deny(
            f"tool {found.name!r} is marked dangerous and no policy allows it; add a policy "
            "to the runtime's gates with a rule that names it (mainspring.guard.policy)"
        )


class ToolApprovals:
    """The gate hook that asks a person before a tool marked ``needs_approval`` runs: the
    run parks durably with the call's arguments; the person approves, rejects (the
    caller, or an agent's model, is told why) or edits the arguments."""

    name = "tool-approvals"

    def __init__(self, toolbox: Toolbox) -> None:
        self._toolbox = toolbox

    def before(self, effect: Effect) -> Approve | None:
        if effect.kind != "tool" or not effect.name.startswith("tool:"):
            return None
        name = effect.name[len("tool:") :]
        found = self._toolbox._tools.get(name)
        if found is None or found.needs_approval is False:  # most tools: nothing to ask
            return None
        if not found.asks_approval(effect.args):
            return None
        args = dict(effect.args)
        if found.secrets:
            self._toolbox.secrets_of(name)  # its values known before the call is shown
        if HANDED:
            args = HANDED.scrubber.value(args)  # the person is shown no secret either
        return Approve(f"tool {name!r} needs a person's approval", {"tool": name, "args": args})


def _effect_function(toolbox: weakref.ref[Toolbox], name: str) -> Callable[..., Any]:
    """A tool's effect function, holding its toolbox weakly (no reference cycle through
    the toolbox's cache of them)."""

    async def tool_call(**args: Any) -> Any:  # keyword arguments: a tool's may be any name
        made = toolbox()
        if made is None:
            raise RuntimeError("the toolbox this call was made through is gone")
        return await made._effect(name, args)

    return tool_call
