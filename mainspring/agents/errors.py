"""The agent loop's errors."""

from __future__ import annotations

from ..errors import MainspringError


class AgentError(MainspringError):
    """An agent could not be built or run as asked; the message says what to change."""


class MaxTurnsExceeded(AgentError):
    """An agent asked its model ``max_turns`` times without reaching a final answer.

    The run fails with this error (a looping agent stops, it does not spend on); an
    agent used as a tool instead answers its caller with the error, so the calling
    model can go on without it.
    """
