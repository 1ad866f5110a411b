"""A ``RunAgentInput`` read for Mainspring: its messages, its context, its answers to a
parked run's interrupts, and the run id it names.

Answers come as AG-UI 1.0 ``resume`` entries (``{"interruptId", "status", "payload"}``)
or, from clients that predate them, as ``forwardedProps.resume`` (the same entries, or a
map of interrupt id to value). ``resolved`` resumes with the payload (absent: ``true``,
an approval); ``cancelled`` refuses the call (the model is told it was not made).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ag_ui.core import RunAgentInput

from ..errors import ApiError
from ..ids import checked_id

_CONVERSATION = frozenset(("system", "developer", "user", "assistant", "tool"))
CANCELLED = {"approve": False, "reason": "the person cancelled it in the client"}


def agui_run_id(run_id: str) -> str:
    """The Mainspring run an AG-UI ``runId`` starts: the same request again (a retry)
    reaches the same run, which is streamed again rather than started twice."""
    return f"agui-{run_id}"


def agui_ids(body: RunAgentInput) -> tuple[str, str]:
    """The input's Mainspring thread and run id, checked as the API's ids are (422 if not:
    a run or thread the other endpoints could not reach must not be made)."""
    thread = checked_id(body.thread_id, "threadId")
    run_id = checked_id(agui_run_id(body.run_id), "runId", prefix="agui-")
    return thread, run_id


def conversation(body: RunAgentInput) -> list[dict[str, Any]]:
    """The input's messages in OpenAI's shape (activity and reasoning messages left out)."""
    out = []
    for message in body.messages:
        data = message.model_dump(mode="json")
        if data.get("role") in _CONVERSATION:
            out.append(data)
    return out


def preface(body: RunAgentInput) -> list[dict[str, Any]]:
    """The input's ``context`` as one system message before the new turn (none if empty)."""
    items = [f"- {c.description}: {c.value}" for c in body.context or ()]
    if not items:
        return []
    text = "Context from the application:\n" + "\n".join(items)
    return [{"role": "system", "content": [{"type": "text", "text": text}]}]


def resume_values(body: RunAgentInput) -> dict[str, Any] | None:
    """Interrupt id -> the value to resume with; None when the input answers nothing."""
    values: dict[str, Any] = {}
    for entry in body.resume or ():
        values[entry.interrupt_id] = _value(entry.status, entry.payload)
    props = body.forwarded_props
    legacy = props.get("resume") if isinstance(props, Mapping) else None
    if isinstance(legacy, list):
        for at, item in enumerate(legacy):
            if not isinstance(item, Mapping) or not item.get("interruptId"):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"forwardedProps.resume[{at}]: give {{'interruptId', 'status', 'payload'}}",
                )
            status = str(item.get("status", "resolved"))
            values[str(item["interruptId"])] = _value(status, item.get("payload"))
    elif isinstance(legacy, Mapping):
        values.update({str(k): v for k, v in legacy.items()})
    elif legacy is not None:
        raise ApiError(
            422,
            "invalid_request",
            "forwardedProps.resume: give a list of resume entries or {interrupt id: value}",
        )
    return values or None


def _value(status: str, payload: Any) -> Any:
    if status == "cancelled":
        return CANCELLED
    if status != "resolved":
        raise ApiError(
            422, "invalid_request", f"resume status {status!r}: give 'resolved' or 'cancelled'"
        )
    return True if payload is None else payload
