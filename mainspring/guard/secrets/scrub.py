"""Secret values replaced by ``[secret:NAME]`` wherever they would be recorded or shown.

A tool declaring secrets gets their values in ``ToolContext.secrets``; the toolbox then
scrubs those values from the call's result, its error (message and chain) and its
approval payload, and a gate hook (:mod:`.hook`) scrubs them from every effect's
recorded arguments. Scrubbed at the source, the journal never holds a value, so
nothing derived from it does either (the model's context, spans, journal logs, the
audit chain, the CLI, a failed run's error). Logs a tool writes itself go through
:class:`SecretFilter` (``configure_logging`` installs it), which knows every value this
process handed out (:data:`HANDED`).

What is matched: the value as written, JSON-escaped and URL-quoted. Values shorter than
:data:`MIN_LENGTH` characters are matched only as a whole string (replacing ``"abc"``
inside every word would wreck the record and hide nothing).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote

from .._errors import chain, rebuilt

MIN_LENGTH: Final = 4
_LOOP_AT_MOST: Final = 12  # variants below this are replaced one by one; above, one regex


def marker(name: str) -> str:
    return f"[secret:{name}]"


def _variants(name: str, value: str) -> list[tuple[str, str]]:
    shown = marker(name)
    forms = {value, _json_escaped(value), quote(value, safe="")}
    return [(form, shown) for form in forms if form]


def _json_escaped(value: str) -> str:
    import json

    return json.dumps(value)[1:-1]


class Scrubber:
    """Replaces the values of ``secrets`` (name -> value) in text and in JSON data."""

    __slots__ = ("_pairs", "_pattern", "_shown", "_whole")

    def __init__(self, secrets: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        items = secrets.items() if isinstance(secrets, Mapping) else secrets
        pairs: dict[str, str] = {}
        whole: dict[str, str] = {}
        for name, value in items:
            if not value:
                continue
            if len(value) < MIN_LENGTH:
                whole.setdefault(value, marker(name))
                continue
            for form, shown in _variants(name, value):
                pairs.setdefault(form, shown)
        # the longest first: a secret inside another is not left half replaced
        self._pairs = sorted(pairs.items(), key=lambda p: -len(p[0]))
        self._whole = whole
        self._shown = dict(self._pairs)
        self._pattern = (
            re.compile("|".join(re.escape(form) for form, _ in self._pairs))
            if len(self._pairs) > _LOOP_AT_MOST
            else None
        )

    def __bool__(self) -> bool:
        return bool(self._pairs or self._whole)

    def finds(self, text: str) -> bool:
        """Whether ``text`` holds a value (as :meth:`text` would replace)."""
        if text in self._whole:
            return True
        if self._pattern is not None:
            return self._pattern.search(text) is not None
        return any(form in text for form, _ in self._pairs)

    def text(self, text: str) -> str:
        whole = self._whole.get(text)
        if whole is not None:
            return whole
        if self._pattern is not None:
            return self._pattern.sub(lambda m: self._shown[m.group(0)], text)
        for form, shown in self._pairs:
            if form in text:
                text = text.replace(form, shown)
        return text

    def value(self, value: Any) -> Any:
        """JSON data (str, list, dict, scalars) with every value replaced; keys too."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def exception(
        self, exc: Exception, fallback: Callable[[str], Exception] | None = None
    ) -> Exception:
        """``exc`` itself when neither it nor its chain shows a value; else an exception of
        its type (or ``fallback(message)`` when that type cannot be rebuilt from one
        message) with the message scrubbed, no chain, and ``exc``'s traceback (frames
        and source lines: no values)."""
        if not any(self.finds(str(e)) or self.finds(repr(e.args)) for e in chain(exc)):
            return exc
        return rebuilt(exc, self.text(str(exc)), fallback)


def scrubber_for(secrets: Mapping[str, str]) -> Scrubber:
    """The scrubber of one call's secrets (made once per set of values)."""
    return _scrubber(tuple(sorted(secrets.items())))


@lru_cache(maxsize=256)
def _scrubber(items: tuple[tuple[str, str], ...]) -> Scrubber:
    return Scrubber(items)


class HandedValues:
    """Every secret value this process handed to a tool (the newest ``limit``), for the
    sinks that cannot know which call a text came from (logs)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}  # value -> name, oldest first
        self.scrubber = Scrubber(())

    def __bool__(self) -> bool:
        return bool(self._values)

    def add(self, secrets: Mapping[str, str]) -> None:
        known = self._values
        if all(known.get(v) == n for n, v in secrets.items() if v):
            return  # the common case: nothing new, nothing to rebuild
        with self._lock:
            for name, value in secrets.items():
                if value:
                    known.pop(value, None)
                    known[value] = name
            while len(known) > self.limit:
                known.pop(next(iter(known)))
            self.scrubber = Scrubber((n, v) for v, n in known.items())

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.scrubber = Scrubber(())


HANDED: Final = HandedValues()
_DONE: Final = frozenset({"msg", "exc_text", "stack_info"})  # scrubbed above


class SecretFilter(logging.Filter):
    """A logging filter that scrubs handed-out secret values from a record's message, its
    exception text, its stack and its string extras (``handler.addFilter(SecretFilter())``;
    ``configure_logging`` installs one on its handler)."""

    def __init__(self, values: HandedValues = HANDED) -> None:
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.values:
            return True
        scrub = self.values.scrubber
        message = record.getMessage()
        if scrub.finds(message):
            record.msg, record.args = scrub.text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and scrub.finds(record.exc_text):
            record.exc_text = scrub.text(record.exc_text)
            record.exc_info = None  # formatters would format it again from the exception
        if record.stack_info and scrub.finds(record.stack_info):
            record.stack_info = scrub.text(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in _DONE and scrub.finds(value):
                record.__dict__[key] = scrub.text(value)
        return True
