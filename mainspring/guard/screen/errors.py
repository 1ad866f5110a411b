"""The screen's errors: a configuration that cannot work, an input that fails validation,
and a run stopped because something was quarantined."""

from __future__ import annotations

from ...errors import MainspringError


class ScreenError(MainspringError):
    """Base class of the screen's errors."""


class ScreenConfigError(ScreenError, ValueError):
    """A screen configured in a way that cannot work (the message says what to change)."""


class ScreenValidationError(ScreenError, ValueError):
    """A value failed a source's validation (size, content kind, schema); the message names
    the source, the rule and what was found."""


class QuarantinedError(ScreenError):
    """What a source gave was quarantined and the source's rule says stop: the run stops
    here. Built from one message, so that a resumed run raises it again from its record."""
