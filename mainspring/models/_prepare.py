"""What a model's spec does to each request sent to it, and the spec's numbers checked."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from .messages import ModelRequest
from .spec import ModelSpec

#: ``spec.params`` keys that are fields of the request rather than provider extras.
_REQUEST_FIELDS = ("temperature", "max_tokens", "stop", "tool_choice")


class RequestDefaults(NamedTuple):
    """A spec's additions to every request, split once when the router is made."""

    model_id: str
    fields: dict[str, Any]  # request fields (temperature, ...) the request left unset
    params: dict[str, Any]  # provider extras, under the request's own params
    max_tokens: int | None  # the spec's max_output_tokens: a cap

    @classmethod
    def of(cls, name: str, spec: ModelSpec) -> RequestDefaults:
        fields = {k: v for k, v in spec.params.items() if k in _REQUEST_FIELDS}
        params = {k: v for k, v in spec.params.items() if k not in _REQUEST_FIELDS}
        return cls(spec.model_id(name), fields, params, spec.max_output_tokens)

    def apply(self, request: ModelRequest) -> ModelRequest:
        """The request as the model receives it: its provider model id, the spec's defaults
        under the request's own values, max_tokens capped at max_output_tokens."""
        changes: dict[str, Any] = {"model": self.model_id}
        for key, value in self.fields.items():
            if getattr(request, key) is None:
                changes[key] = value
        if self.params:
            changes["params"] = {**self.params, **request.params}
        if self.max_tokens is not None:
            asked = changes.get("max_tokens", request.max_tokens)
            changes["max_tokens"] = (
                self.max_tokens if asked is None else min(asked, self.max_tokens)
            )
        return msgspec.structs.replace(request, **changes)


def check_spec(name: str, spec: ModelSpec) -> None:
    """Refuse numbers that cannot work, naming the model and the field."""
    rules = (
        ("retries", spec.retries, spec.retries >= 0, ">= 0"),
        ("backoff", spec.backoff, spec.backoff >= 0, ">= 0"),
        ("max_backoff", spec.max_backoff, spec.max_backoff >= spec.backoff, ">= backoff"),
        ("timeout", spec.timeout, spec.timeout is None or spec.timeout > 0, "> 0 or None"),
        (
            "first_token_timeout",
            spec.first_token_timeout,
            spec.first_token_timeout is None or spec.first_token_timeout > 0,
            "> 0 or None",
        ),
    )
    problems = [f"{field}={value!r} (must be {rule})" for field, value, ok, rule in rules if not ok]
    if problems:
        raise ValueError(f"model {name!r}: " + "; ".join(problems))
