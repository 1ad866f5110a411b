"""Background tool calls: ``ctx.tool_async`` starts a long call, the node goes on, and
``ctx.wait_tool`` later takes its result, parking the run durably until it is there.

A background call is a run of its own (a one-node graph calling ``ctx.tool``), started
once with an id derived from the starting effect's key, so it has a journal, passes
the gate, survives a restart (recovered like any run) and is visible in the CLI. A
step that waits for it parks on an interrupt naming it; when the call's run ends, the
runtime resumes the waiting run with its result. Both orders are covered: the call
ending before the wait (the wait finds the result), and after it (the end resumes the
waiting run), also across a restart (the runtime looks for such waits when it opens).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypedDict

import anyio

from ..engine.capabilities import NodeCalls
from ..engine.effects import EffectCall, current_key
from ..errors import ConflictError, MainspringError, RunStateError
from ..events import INTERRUPTED, TERMINAL_KINDS, Interrupted
from ..graph import END, START, Graph
from ..status import RunStatus
from ._calling import calling
from .errors import ToolFailedError

if TYPE_CHECKING:
    from ..engine.runtime import Runtime
    from ..events import Event

log = logging.getLogger("mainspring.tools")

SUFFIX = "~bg"  # a background call's run id: the starting effect's key + this


class _Call(TypedDict, total=False):
    tool: str
    args: dict[str, Any]
    result: Any


async def _call_tool(s: _Call, ctx: Any) -> _Call:
    return {"result": await ctx.tool(s["tool"], **s.get("args", {}))}


_builder = Graph(_Call, name="mainspring-background-tool")
_builder.node("call", _call_tool)
_builder.edge(START, "call")
_builder.edge("call", END)
graph = _builder.compile(ref="mainspring.tools.background:graph")


def waiting_on(payload: Any) -> str | None:
    """The background call an interrupt waits for, if it is such a wait."""
    if isinstance(payload, dict) and isinstance(wait := payload.get("wait_tool"), dict):
        run = wait.get("run")
        return run if isinstance(run, str) else None
    return None


class Background:
    """The toolbox's background calls, attached to the runtime that drives them."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._resuming = anyio.Lock()  # one resume at a time: both triggers may fire

    async def attach(self, runtime: Runtime) -> None:
        """Listen for ends and waits, and resume the waits whose call ended meanwhile."""
        self._runtime = runtime
        runtime.register(graph)
        runtime.services.listeners.append(self._heard)
        # Waits whose call ended while no process was there to resume them (the latest
        # parked runs: an older one is resumed by hand, or when its call is looked at).
        # Only the tail of each journal is read (a park's interrupts are its last events):
        # folding every parked run to find the few that wait would make opening slow.
        for record in await runtime.list_runs(status=RunStatus.INTERRUPTED, limit=1_000):
            tail = await runtime.store.read(record.run_id, after=max(0, record.last_seq - 16))
            for event in tail:
                data = event.data
                if isinstance(data, Interrupted) and (call := waiting_on(data.payload)):
                    await self._resume_if_done(record.run_id, data.id, call)

    async def start(self, node: NodeCalls, name: str, args: dict[str, Any]) -> dict[str, str]:
        """Start the call once (an effect: a re-run gets the same handle back)."""
        # (not "args": the gate's name for positional arguments)
        call = {"tool": name, "arguments": args}
        effect = EffectCall("effect", f"tool_async:{name}", self._start, (), call)
        handle: dict[str, str] = await node.effect(effect)
        return handle

    async def _start(self, tool: str, arguments: dict[str, Any]) -> dict[str, str]:
        runtime = self._require()
        run_id = f"{current_key.get()}{SUFFIX}"
        metadata = _metadata_of_caller()
        await runtime.start(
            graph, {"tool": tool, "args": arguments}, run_id=run_id, metadata=metadata
        )
        return {"id": run_id, "tool": tool}

    async def result(self, run_id: str) -> tuple[bool, Any]:
        """(True, result) once the call's run finished; (False, None) while it runs;
        ToolFailedError if it failed or was cancelled."""
        runtime = self._require()
        record = await runtime.get_run(run_id)
        if record.status is RunStatus.FINISHED:
            state = (await runtime.outcome(run_id, graph)).state
            return True, (state or {}).get("result")
        if record.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ToolFailedError(
                f"background tool call {run_id!r} {record.status.value}: {record.error or ''}"
            )
        return False, None

    # -- resuming the waits -------------------------------------------------------------

    def _heard(self, event: Event) -> None:
        # Every event of every run passes here: the kind decides first, cheaply.
        kind = event.kind
        if kind in TERMINAL_KINDS:
            if event.run_id.endswith(SUFFIX) and (spawn := self._spawn()) is not None:
                spawn(_logged, self._call_ended, event.run_id)
        elif kind == INTERRUPTED:
            data = event.data
            if not isinstance(data, Interrupted):
                return
            call = waiting_on(data.payload)
            if call is not None and (spawn := self._spawn()) is not None:
                spawn(_logged, self._wait_parked, event.run_id, data.id, call)

    def _spawn(self) -> Any:
        runtime = self._runtime
        return runtime.services.spawn if runtime is not None else None

    async def _call_ended(self, call: str) -> None:
        """Resume the run that started the call if it waits for it (the call's id is the
        starting effect's key: ``<run>:<step>.<task>.<index>`` + SUFFIX)."""
        runtime = self._require()
        await runtime.handle(call).wait()  # its end committed
        caller = call[: -len(SUFFIX)].rpartition(":")[0]
        try:
            outcome = await runtime.outcome(caller)
        except Exception:  # the caller is gone (deleted, another store): nothing to resume
            return
        for pending in outcome.interrupts:
            if waiting_on(pending.payload) == call:
                await self._resume_if_done(caller, pending.id, call)

    async def _wait_parked(self, run_id: str, interrupt_id: str, call: str) -> None:
        runtime = self._require()
        await runtime.handle(run_id).wait()  # parked and committed
        await self._resume_if_done(run_id, interrupt_id, call)

    async def _resume_if_done(self, run_id: str, interrupt_id: str, call: str) -> None:
        runtime = self._require()
        try:
            done, value = await self.result(call)
            answer: dict[str, Any] = {"ok": value}
        except ToolFailedError as exc:
            done, answer = True, {"error": str(exc)}
        except MainspringError:  # the call's run is not in this store: nothing to give
            return
        if not done:
            return
        async with self._resuming:
            try:
                outcome = await runtime.outcome(run_id)
            except MainspringError:  # a graph this runtime does not know: not ours to resume
                return
            if not any(p.id == interrupt_id for p in outcome.interrupts):
                return  # resumed already (by the other trigger, or a person)
            try:
                await runtime.resume(run_id, answer, interrupt_id=interrupt_id)
            except (RunStateError, ConflictError):  # another process resumed it first
                return

    def _require(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError(
                "background tool calls need the toolbox's runtime: build it with "
                "Runtime(store, tools=toolbox) and enter it (async with)"
            )
        return self._runtime


async def _logged(fn: Any, *args: Any) -> None:
    """A task of the runtime's group: its failure is logged, never the runtime's."""
    try:
        await fn(*args)
    except Exception:
        log.exception("resuming a run that waits for a background tool call failed")


def _metadata_of_caller() -> dict[str, Any] | None:
    node = calling.get()
    return dict(node.metadata) if node is not None and node.metadata else None
