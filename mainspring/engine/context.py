"""The Context a node receives: journaled effects, interrupts and custom events."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import RunStateError
from ..events import Emitted, Interrupted, ModelDelta
from .capabilities import DeltaSink
from .effects import EffectCall, current_key, perform
from .fold import TaskRecord
from .seams import ActiveRun

if TYPE_CHECKING:
    from ..memory.node import NodeMemory
    from ..models.messages import ModelResponse


class Parked(BaseException):
    """Raised by ``ctx.interrupt`` to stop the node until a resume value arrives.

    A BaseException so that a node's ``except Exception`` does not swallow it.
    """


class Context:
    """What a node can do besides computing its update. One per task attempt."""

    __slots__ = ("_driver", "_effects", "_interrupts", "_task", "node")

    def __init__(self, driver: ActiveRun, task: TaskRecord) -> None:
        self._driver = driver
        self._task = task
        self._effects = 0
        self._interrupts = 0
        self.node = task.node

    @property
    def run_id(self) -> str:
        return self._driver.run_id

    @property
    def root_run_id(self) -> str:
        """The top-level run: this run, or the run whose subgraph this one is."""
        parent = self._driver.fold.parent
        return parent.root if parent is not None else self._driver.run_id

    @property
    def root_nonce(self) -> str | None:
        """The nonce the top-level run started with (trace ids mix it in); None in older runs."""
        parent = self._driver.fold.parent
        return parent.root_nonce if parent is not None else self._driver.fold.nonce

    @property
    def thread(self) -> str | None:
        return self._driver.fold.thread

    @property
    def step_index(self) -> int:
        return self._driver.fold.step

    @property
    def task_id(self) -> str:
        """Deterministic id of this task: ``run:step.task``."""
        return f"{self._driver.run_id}:{self._driver.fold.step}.{self._task.index}"

    @property
    def attempt(self) -> int:
        return self._task.attempt

    @property
    def idempotency_key(self) -> str | None:
        """The key of the effect running now (inside ``ctx.step``); the same on every re-run."""
        return current_key.get()

    @property
    def metadata(self) -> dict[str, Any]:
        return self._driver.fold.metadata

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a journaled effect named ``name``.

        Its result is recorded; when the node runs again (resume after a crash or
        an interrupt, a retry, a replay) the recorded result is returned and ``fn``
        is not called. A call that started but never finished, or failed and is
        retried with its node, runs again with the same idempotency key (unless the
        node's ``Retry(fresh_keys=True)`` asks for a key per attempt), passed as
        ``idempotency_key=`` if ``fn`` accepts it and readable as
        ``ctx.idempotency_key``. Sync functions run in a worker thread, so blocking
        I/O does not stall other runs; one that outlives its node's timeout is
        abandoned and its late result recorded as ``discarded``. The call passes the
        runtime's effect gate (``Runtime(gates=[...])``), which may deny it
        (``EffectDeniedError``), ask a person, answer it, or change its arguments.
        """
        return await self.effect(EffectCall("effect", name, fn, args, kwargs))

    def effect(self, call: EffectCall) -> Awaitable[Any]:
        """Make ``call`` as this task's next effect, through the one effect pipeline
        (``mainspring.engine.effects``): what ``step``, and later tools and models, use.
        Await it at once: its place among the task's effects is taken now. (The pipeline's
        coroutine itself, not one awaiting it: a layer less an effect.)"""
        index = self._effects
        self._effects += 1
        return perform(self._driver, self._task, index, call, self.interrupt)

    async def model(self, model: str, prompt: Any, /, **options: Any) -> ModelResponse:
        """Ask ``model`` (a name or alias of the runtime's gateway) as a journaled effect.

        ``prompt`` is a string (one user message), a Message or a list of messages.
        Options: ``output=`` a pydantic type (structured output, validated, repaired
        up to ``repairs=`` times), ``tools=``, ``tool_choice=``, ``temperature=``,
        ``max_tokens=``, ``stop=``, ``cache=`` (True or a TTL in seconds: the gateway's
        response cache), ``stream=`` (default: when someone follows ``run.events()``,
        whose subscribers get its tokens as ``model_delta`` events), and provider
        parameters. Returns a ``ModelResponse``; a resumed run gets the recorded one
        back without a call. Budgets, policy and the loop breaker decide first (the
        effect gate).
        """
        gateway = self._driver.services.models
        if gateway is None:
            raise RunStateError(
                "ctx.model needs a model gateway: build the runtime with "
                "Runtime(store, models=Gateway({...})) (see mainspring.models)"
            )
        result: ModelResponse = await gateway.call_in_run(self, model, prompt, options)
        return result

    async def tool(self, name: str, /, **args: Any) -> Any:
        """Call the runtime's tool ``name`` (``Runtime(tools=Toolbox([...]))``) as a
        journaled effect: the gate decides first (a tool that needs approval parks the run
        for a person), the arguments are validated (``ToolArgumentsError`` says what is
        wrong), the call is bounded (timeout, declared retries, limits, breaker) and its
        result validated. A resumed run gets the recorded result without a call."""
        return await self._toolbox("ctx.tool").call_in_run(self, name, args)

    async def tool_async(self, name: str, /, **args: Any) -> dict[str, str]:
        """Start tool ``name`` in the background and go on: returns a handle (JSON: keep it
        in the state) for ``wait_tool``. The call is a run of its own, started once (a
        re-run gets the same handle), durable across restarts."""
        handle: dict[str, str] = await self._toolbox("ctx.tool_async").start_in_run(
            self, name, args
        )
        return handle

    async def wait_tool(self, call: dict[str, str] | str) -> Any:
        """The result of a background call (``tool_async``'s handle or its id). If it is
        not there yet the run parks durably and resumes when the call ends (in this or
        another process); a failed call raises ``ToolFailedError``."""
        toolbox = self._toolbox("ctx.wait_tool")
        call_id = call if isinstance(call, str) else call["id"]
        if self._task.interrupts.get(self._interrupts) is None:  # not parked here before
            done, value = await toolbox.background_result(call_id)
            if done:  # journaled here, so a replay of this node sees the same value
                return await self.step(f"tool_result:{call_id}", lambda: value)
        answer = await self.interrupt({"wait_tool": {"run": call_id}})
        if isinstance(answer, dict) and "error" in answer:
            from ..tools.errors import ToolFailedError

            raise ToolFailedError(str(answer["error"]))
        return answer.get("ok") if isinstance(answer, dict) else answer

    @property
    def memory(self) -> NodeMemory:
        """The runtime's memory (``Runtime(memory=Memory(...))``) for this node: the
        thread's session state and messages, shared state, semantic recall and context
        assembly. Every read and write is a journaled effect of kind ``memory`` that passes
        the gate (policy sees it; a resumed or replayed run gets what this one saw) and is
        scoped to the run's tenant."""
        memory = self._driver.services.memory
        if memory is None:
            raise RunStateError(
                "ctx.memory needs memory: build the runtime with "
                "Runtime(store, memory=Memory(...)) (see mainspring.memory)"
            )
        node: NodeMemory = memory.in_run(self)
        return node

    def _toolbox(self, what: str) -> Any:
        toolbox = self._driver.services.tools
        if toolbox is None:
            raise RunStateError(
                f"{what} needs a toolbox: build the runtime with "
                "Runtime(store, tools=Toolbox([...])) (see mainspring.tools)"
            )
        return toolbox

    def delta_sink(self, name: str) -> DeltaSink | None:
        """For a capability about to make effect ``name``: a function that streams pieces
        of its answer to the run's live subscribers (``ModelDelta`` events, never
        journaled), or None when nobody follows the run live."""
        driver = self._driver
        if not driver.watched or driver.oracle is not None:
            return None
        step, tindex, node, index = driver.fold.step, self._task.index, self.node, self._effects

        def send(**fields: Any) -> None:
            driver.broadcast(ModelDelta(step, tindex, node, index, name, **fields))

        return send

    async def interrupt(self, payload: Any = None) -> Any:
        """Pause the run durably until ``runtime.resume(run_id, value)``; returns ``value``.

        The process may exit meanwhile. When the run resumes, the node runs again
        from its start: effects it made return their recorded results and earlier
        interrupts return their values, so nothing is repeated.
        """
        driver = self._driver
        task = self._task
        index = self._interrupts
        self._interrupts += 1
        record = task.interrupts.get(index)
        if record is not None:
            if record.resumed:
                return record.value
            raise Parked()
        if driver.oracle is not None:
            found, value = driver.oracle.resume_value(driver.fold.step, task.index, index)
            if found:
                return value
        driver.check_json(payload, f"the interrupt payload of node {task.node!r}")
        step = driver.fold.step
        interrupt_id = f"{step}.{task.index}.{index}"
        driver.record(Interrupted(step, task.index, task.node, index, interrupt_id, payload))
        raise Parked()

    def emit(self, data: Any) -> None:
        """Record a custom event in the journal; live streams see it at once.

        Callable from a blocking node's worker thread too: the event is recorded on the
        event loop.
        """
        if threading.get_ident() != self._driver.loop_thread:
            import anyio.from_thread  # ~10 ms to import: only blocking nodes that emit need it

            anyio.from_thread.run_sync(self.emit, data)
            return
        driver = self._driver
        driver.check_json(data, f"the event emitted by node {self._task.node!r}")
        driver.record(Emitted(driver.fold.step, self._task.index, self._task.node, data))
