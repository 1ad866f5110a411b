"""A run's journal events and live tokens as AG-UI events (``ag_ui.core``), one run at a time.

* a task of a node: ``STEP_STARTED`` / ``STEP_FINISHED`` (``step_name`` the node; a second
  task of the same step, such as a parallel tool call, gets ``node[task]``);
* a model call: its ``model_delta`` tokens as ``TEXT_MESSAGE_START/CONTENT/END`` and its
  tool calls as ``TOOL_CALL_START/ARGS/END``; a call whose tokens this stream did not see
  (replayed from the journal, or too fast to catch) is sent whole when it finishes;
* a tool's answer (the ``tool`` message a task adds to the conversation):
  ``TOOL_CALL_RESULT``;
* ``ctx.emit(data)``: ``CUSTOM`` named ``mainspring.emitted``;
* the end (:meth:`Translator.close`): ``STATE_SNAPSHOT`` of the agent's state (its messages
  left out: they were streamed), then ``RUN_FINISHED`` (outcome ``success``, ``interrupt``
  with one AG-UI ``Interrupt`` per pending approval, or ``cancelled``; ``usage`` per
  provider and model) or ``RUN_ERROR`` for a failed run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Interrupt,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

from ...engine.outcome import PendingInterrupt, RunOutcome
from ...events import (
    UNSET,
    EffectFinished,
    Emitted,
    Event,
    ModelDelta,
    StepFailed,
    StepFinished,
    StepStarted,
    to_jsonable,
)
from ...status import RunStatus
from ..agent_turns import add_usage

#: What an approval's answer may be (``ResumeEntry.payload``), for a client to build a form.
APPROVAL_SCHEMA: dict[str, Any] = {
    "description": "true (or absent) approves; {approve: false, reason} refuses; "
    "{args: {...}} runs the call with edited arguments",
    "anyOf": [
        {"type": "boolean"},
        {
            "type": "object",
            "properties": {"approve": {"type": "boolean"}, "reason": {"type": "string"}},
            "required": ["approve"],
        },
        {"type": "object", "properties": {"args": {"type": "object"}}, "required": ["args"]},
    ],
}

Effect = tuple[int, int, int]


class Translator:
    """Feed it a run's events in order (:meth:`feed`), then its outcome (:meth:`close`)."""

    def __init__(self, thread_id: str, run_id: str, mainspring_run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id  # the AG-UI run id (RunAgentInput.runId)
        self.source = mainspring_run_id
        self._steps: dict[tuple[int, int], str] = {}  # open steps: (step, task) -> name
        self._args: dict[tuple[int, int], Any] = {}  # a task's Send payload (a tool call)
        self._texts: dict[Effect, str] = {}  # open text messages, by model call
        self._said: set[Effect] = set()  # model calls whose text was streamed
        self._calls: dict[tuple[Effect, int], str] = {}  # streamed tool calls -> their ids
        self.usage: dict[tuple[str, str], dict[str, int]] = {}

    # -- events --------------------------------------------------------------------------

    def feed(self, event: Event) -> list[BaseEvent]:
        """The AG-UI events ``event`` makes, stamped with its time (milliseconds)."""
        out = self._translate(event)
        stamp = int(event.ts * 1000)
        for made in out:
            made.timestamp = stamp
        return out

    def _translate(self, event: Event) -> list[BaseEvent]:
        data = event.data
        if isinstance(data, ModelDelta):
            return self._delta(data)
        if isinstance(data, StepStarted):
            return self._step_started(data)
        if isinstance(data, EffectFinished):
            if data.name.startswith("model:") and data.error is None:
                return self._model_finished(data)
            return []
        if isinstance(data, StepFinished):
            out = self._results(data)
            return [*out, *self._step_ended(data.step, data.task)]
        if isinstance(data, StepFailed):
            return self._step_ended(data.step, data.task)
        if isinstance(data, Emitted):
            return [CustomEvent(name="mainspring.emitted", value=to_jsonable(data.data))]
        return []

    def _step_started(self, data: StepStarted) -> list[BaseEvent]:
        if data.arg is not UNSET:
            self._args[(data.step, data.task)] = data.arg
        key = (data.step, data.task)
        if key in self._steps:  # a retry of a task whose failure closed nothing yet
            return []
        name = data.node if data.task == 0 else f"{data.node}[{data.task}]"
        self._steps[key] = name
        return [StepStartedEvent(step_name=name)]

    def _step_ended(self, step: int, task: int) -> list[BaseEvent]:
        name = self._steps.pop((step, task), None)
        return [] if name is None else [StepFinishedEvent(step_name=name)]

    def _message_id(self, key: Effect) -> str:
        return f"{self.source}:{key[0]}.{key[1]}.{key[2]}"

    def _delta(self, d: ModelDelta) -> list[BaseEvent]:
        key = (d.step, d.task, d.effect)
        out: list[BaseEvent] = []
        if d.text:
            if key not in self._texts:
                self._texts[key] = self._message_id(key)
                self._said.add(key)
                out.append(TextMessageStartEvent(message_id=self._texts[key], role="assistant"))
            out.append(TextMessageContentEvent(message_id=self._texts[key], delta=d.text))
        call = d.tool_call
        if call is not None:
            index = int(call.get("index") or 0)
            call_id = self._calls.get((key, index))
            fragment = str(call.get("arguments") or "")
            if call_id is None:
                if not call.get("id") or not call.get("name"):
                    return out  # a fragment before its call's start: the end sends it whole
                out += self._end_text(key)
                call_id = self._calls[(key, index)] = str(call["id"])
                out.append(
                    ToolCallStartEvent(
                        tool_call_id=call_id,
                        tool_call_name=str(call["name"]),
                        parent_message_id=self._message_id(key),
                    )
                )
            if fragment:
                out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=fragment))
        return out

    def _end_text(self, key: Effect) -> list[BaseEvent]:
        message_id = self._texts.pop(key, None)
        return [] if message_id is None else [TextMessageEndEvent(message_id=message_id)]

    def _model_finished(self, data: EffectFinished) -> list[BaseEvent]:
        add_usage(self.usage, data)
        key = (data.step, data.task, data.effect)
        message = _mapping(_mapping(data.result).get("message"))
        parts = [p for p in message.get("content") or () if isinstance(p, Mapping)]
        out = self._end_text(key)
        text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        if text and key not in self._said:
            message_id = self._message_id(key)
            out += [
                TextMessageStartEvent(message_id=message_id, role="assistant"),
                TextMessageContentEvent(message_id=message_id, delta=text),
                TextMessageEndEvent(message_id=message_id),
            ]
        calls = [p for p in parts if p.get("type") == "tool_call"]
        for index, call in enumerate(calls):
            call_id = self._calls.pop((key, index), None)
            if call_id is None:
                call_id = str(call.get("id", ""))
                out.append(
                    ToolCallStartEvent(
                        tool_call_id=call_id,
                        tool_call_name=str(call.get("name", "")),
                        parent_message_id=self._message_id(key),
                    )
                )
                args = json.dumps(call.get("arguments") or {})
                out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=args))
            out.append(ToolCallEndEvent(tool_call_id=call_id))
        return out

    def _results(self, data: StepFinished) -> list[BaseEvent]:
        """The tool messages a task added (a tool's answer, an agent tool's, a handoff's)."""
        update = data.update if isinstance(data.update, Mapping) else {}
        out: list[BaseEvent] = []
        for i, m in enumerate(update.get("messages") or ()):
            if not isinstance(m, Mapping) or m.get("role") != "tool":
                continue
            text = "".join(
                str(p.get("text", ""))
                for p in m.get("content") or ()
                if isinstance(p, Mapping) and p.get("type") == "text"
            )
            out.append(
                ToolCallResultEvent(
                    message_id=f"{self.source}:{data.step}.{data.task}.r{i}",
                    tool_call_id=str(m.get("tool_call_id", "")),
                    content=text,
                    role="tool",
                )
            )
        return out

    # -- the end -------------------------------------------------------------------------

    def close(self, outcome: RunOutcome) -> list[BaseEvent]:
        """What ends the AG-UI run: open messages and steps closed, the state, the outcome."""
        out: list[BaseEvent] = []
        for key in list(self._texts):
            out += self._end_text(key)
        for step, task in list(self._steps):
            out += self._step_ended(step, task)
        state = outcome.state if isinstance(outcome.state, Mapping) else None
        if state is not None:
            snapshot = {k: v for k, v in state.items() if k != "messages"}
            out.append(StateSnapshotEvent(snapshot=to_jsonable(snapshot, what="the state")))
        usage = self._usage() or None
        status = outcome.status
        if status is RunStatus.FINISHED:
            result = to_jsonable(state.get("output")) if state is not None else None
            out.append(
                RunFinishedEvent(
                    thread_id=self.thread_id,
                    run_id=self.run_id,
                    result=result,
                    outcome=RunFinishedSuccessOutcome(),
                    usage=usage,
                )
            )
        elif status is RunStatus.INTERRUPTED and outcome.interrupts:
            interrupts = [self._interrupt(i) for i in outcome.interrupts]
            out.append(
                RunFinishedEvent(
                    thread_id=self.thread_id,
                    run_id=self.run_id,
                    outcome=RunFinishedInterruptOutcome(interrupts=interrupts),
                    usage=usage,
                )
            )
        elif status is RunStatus.CANCELLED:
            out.append(
                RunFinishedEvent(
                    thread_id=self.thread_id,
                    run_id=self.run_id,
                    outcome=RunFinishedCancelledOutcome(),
                    usage=usage,
                )
            )
        elif status is RunStatus.FAILED:
            error = outcome.error or {}
            message = str(error.get("message") or error.get("type") or "the run failed")
            out.append(
                RunErrorEvent(message=message, code=str(error.get("type") or "failed"), usage=usage)
            )
        else:
            out.append(
                RunErrorEvent(
                    message=f"the stream stopped while run {self.source!r} is still "
                    f"{status.value}; follow it at GET /v1/runs/{self.source}/stream",
                    code="still_running",
                )
            )
        return out

    def _usage(self) -> list[TokenUsage]:
        return [
            TokenUsage(
                provider=provider or None,
                model=model or None,
                input_tokens=u["input"],
                output_tokens=u["output"],
                total_tokens=u["input"] + u["output"],
                reasoning_tokens=u["reasoning"] or None,
                cached_input_tokens=u["cached"] or None,
            )
            for (provider, model), u in self.usage.items()
        ]

    def _interrupt(self, pending: PendingInterrupt) -> Interrupt:
        payload = to_jsonable(pending.payload, what="the interrupt's payload")
        ask = payload.get("approve") if isinstance(payload, Mapping) else None
        meta = {"mainspring": {"run_id": self.source, "node": pending.node, "payload": payload}}
        tool_call_id = self._tool_call_of(pending.id)
        if isinstance(ask, Mapping):
            reason = "tool_approval" if ask.get("kind") == "tool" else "approval"
            return Interrupt(
                id=pending.id,
                reason=reason,
                message=str(ask.get("reason") or "a person's approval is needed"),
                tool_call_id=tool_call_id,
                response_schema=APPROVAL_SCHEMA,
                metadata=meta,
            )
        human = payload.get("needs_human") if isinstance(payload, Mapping) else None
        return Interrupt(
            id=pending.id,
            reason="needs_human" if human is not None else "interrupt",
            message=str(human.get("reason") or "") or None if isinstance(human, Mapping) else None,
            tool_call_id=tool_call_id,
            metadata=meta,
        )

    def _tool_call_of(self, interrupt_id: str) -> str | None:
        """The tool call an interrupt of the tools node stands in, from its task's payload."""
        step, _, rest = interrupt_id.partition(".")
        task = rest.partition(".")[0]
        if not (step.isdigit() and task.isdigit()):
            return None
        arg = self._args.get((int(step), int(task)))
        if isinstance(arg, Mapping) and arg.get("id"):
            return str(arg["id"])
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
