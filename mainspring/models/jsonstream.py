"""A streaming JSON parser: the best partial value after every fragment, and a clear end.

``PartialJSON().feed(fragment)`` returns the value formed so far: objects hold the
keys whose values have started (a string, object or array, shown as far as it goes)
or completed (a number, true, false, null: only once whole); arrays hold their
complete items and the partial last one. ``finish()`` returns the final value, equal
to ``json.loads`` of the whole text, or raises :class:`TruncatedJSONError` or
:class:`InvalidJSONError` saying where (character, line, column, and the JSON path).

Incremental: each fragment is scanned once, strings and whitespace by the regex
engine, so the work is linear in the input. The value returned is live: later feeds
update it in place (that is what keeps them cheap); copy it to keep a snapshot.
``feed`` never raises on bad input: the first error is kept in ``error``, later input
is ignored, and ``finish`` raises it. Strict JSON (no NaN or Infinity).
"""

from __future__ import annotations

import re
from typing import Any, Final

_WS: Final = re.compile(r"[ \t\n\r]*")
_STR_RUN: Final = re.compile(r'[^"\\\x00-\x1f]+')
_NUM_RUN: Final = re.compile(r"[-+0-9.eE]+")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_ESCAPES: Final = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
                   "t": "\t"}  # fmt: skip
_LITERALS: Final = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What the parser expects next, outside a token.
_VALUE, _FIRST_VALUE, _FIRST_KEY, _KEY, _COLON, _AFTER, _DONE = range(7)
_EXPECTED: Final = {
    _VALUE: "a value",
    _FIRST_VALUE: "a value or ']'",
    _FIRST_KEY: "a key string or '}'",
    _KEY: "a key string",
    _COLON: "':'",
    _AFTER: "',' or the end of the object or array",
    _DONE: "nothing more",
}


class PartialJSONError(ValueError):
    """JSON that cannot be completed: where it went wrong, and what was expected there."""

    def __init__(
        self, message: str, *, position: int = -1, line: int = 0, column: int = 0, path: str = "$"
    ) -> None:
        super().__init__(message)
        self.position = position  # characters from the start of the input
        self.line = line
        self.column = column
        self.path = path  # the JSON path being written, e.g. $.items[2].name


class TruncatedJSONError(PartialJSONError):
    """The input stopped before the JSON value was complete (e.g. the model hit max_tokens)."""


class InvalidJSONError(PartialJSONError):
    """The input is not JSON, and no continuation could make it JSON."""


class _Invalid(Exception):
    def __init__(self, what: str, at: int) -> None:
        self.what, self.at = what, at


class _Frame:
    __slots__ = ("container", "key", "start")

    def __init__(self, container: dict[str, Any] | list[Any], start: int) -> None:
        self.container = container
        self.key: str | None = None
        self.start = start


class PartialJSON:
    """Feed text as it streams; read the partial value after each fragment."""

    def __init__(self) -> None:
        self._stack: list[_Frame] = []
        self._root: Any = None
        self._state = _VALUE
        self._tok: str | None = None  # "str", "key", "num", "lit" while one is unfinished
        self._parts: list[str] = []  # pieces of the string or number being read
        self._shown = ""  # the part of a string value already placed in its parent
        self._esc = ""  # an escape sequence split across fragments
        self._high = ""  # a high surrogate waiting for its low half
        self._tok_start = 0
        self._base = 0  # characters consumed by earlier fragments
        self._lines = 1  # line number at the end of what was fed
        self._line_start = 0  # position where that line starts
        self.error: PartialJSONError | None = None

    @property
    def value(self) -> Any:
        """The partial value (None before any value has started)."""
        return self._root

    @property
    def done(self) -> bool:
        """A whole top-level value has been read (a bare number only ends at a delimiter)."""
        return self._state == _DONE

    def feed(self, fragment: str) -> Any:
        """Read the next ``fragment``; returns the partial value so far."""
        if self.error is not None:
            return self._root
        try:
            self._scan(fragment)
        except _Invalid as exc:
            self.error = self._located(InvalidJSONError, exc.what, self._base + exc.at, fragment)
            return self._root
        self._advance(fragment)
        if self._tok == "str" and self._parts:
            self._shown += "".join(self._parts)
            self._parts.clear()
            self._place(self._shown, replace=True)
        return self._root

    def finish(self) -> Any:
        """The complete value; raises TruncatedJSONError or InvalidJSONError if there is none."""
        if self.error is not None:
            raise self.error
        if self._tok == "num" and not self._stack and not self._number_goes_on():
            try:
                self._end_number()
            except _Invalid as exc:
                self.error = self._located(InvalidJSONError, exc.what, self._base + exc.at, "")
                raise self.error from None
        if self._state == _DONE:
            return self._root
        self.error = self._located(TruncatedJSONError, self._truncated_what(), self._base, "")
        raise self.error

    # -- scanning ----------------------------------------------------------------------------

    def _scan(self, s: str) -> None:
        i, n = 0, len(s)
        while i < n:
            tok = self._tok
            if tok == "str" or tok == "key":
                i = self._scan_string(s, i, n)
            elif tok == "num":
                m = _NUM_RUN.match(s, i)
                if m is not None:
                    self._parts.append(m.group())
                    i = m.end()
                if i < n:
                    self._end_number()
            elif tok == "lit":
                i = self._scan_literal(s, i, n)
            else:
                i = _WS.match(s, i).end()  # type: ignore[union-attr]  # * always matches
                if i < n:
                    i = self._structural(s[i], i)

    def _structural(self, c: str, i: int) -> int:
        state = self._state
        if state == _AFTER:
            top = self._stack[-1]
            is_dict = isinstance(top.container, dict)
            if c == ",":
                self._state = _KEY if is_dict else _VALUE
            elif c == ("}" if is_dict else "]"):
                self._close()
            else:
                raise _Invalid(f"expected {_EXPECTED[state]}, found {c!r}", i)
        elif state == _COLON:
            if c != ":":
                raise _Invalid(f"expected ':' after the key, found {c!r}", i)
            self._state = _VALUE
        elif state in (_FIRST_KEY, _KEY):
            if c == '"':
                self._start_token("key", i)
            elif c == "}" and state == _FIRST_KEY:
                self._close()
            else:
                trailing = " (a trailing comma is not JSON)" if c == "}" else ""
                raise _Invalid(f"expected {_EXPECTED[state]}, found {c!r}{trailing}", i)
        elif state == _DONE:
            raise _Invalid(f"extra data after the JSON value: {c!r}", i)
        elif c == "]" and state == _FIRST_VALUE:
            self._close()
        else:
            self._start_value(c, i)
        return i + 1

    def _start_value(self, c: str, i: int) -> None:
        if c == '"':
            self._start_token("str", i)
            self._shown = ""
            self._place("")
        elif c == "{" or c == "[":
            container: dict[str, Any] | list[Any] = {} if c == "{" else []
            self._place(container)
            self._stack.append(_Frame(container, self._base + i))
            self._state = _FIRST_KEY if c == "{" else _FIRST_VALUE
        elif c == "-" or "0" <= c <= "9":
            self._start_token("num", i)
            self._parts.append(c)
        elif c in _LITERALS:
            self._start_token("lit", i)
            self._parts.append(c)
        else:
            trailing = " (a trailing comma is not JSON)" if c == "]" else ""
            raise _Invalid(f"expected {_EXPECTED[self._state]}, found {c!r}{trailing}", i)

    def _start_token(self, kind: str, i: int) -> None:
        self._tok = kind
        self._tok_start = self._base + i
        self._parts = []

    def _scan_string(self, s: str, i: int, n: int) -> int:
        parts = self._parts
        while i < n:
            if self._esc:
                i = self._scan_escape(s, i, n)
                continue
            m = _STR_RUN.match(s, i)
            if m is not None:
                if self._high:
                    parts.append(self._high)
                    self._high = ""
                parts.append(m.group())
                i = m.end()
                continue
            c = s[i]
            if c == '"':
                self._end_string()
                return i + 1
            if c != "\\":
                raise _Invalid(f"control character {c!r} inside a string: escape it", i)
            self._esc = "\\"
            i += 1
        return i

    def _scan_escape(self, s: str, i: int, n: int) -> int:
        esc = self._esc
        if esc == "\\":
            c = s[i]
            if c == "u":
                self._esc = "\\u"
                return i + 1
            if c not in _ESCAPES:
                raise _Invalid(f"invalid escape '\\{c}' in a string", i)
            self._esc = ""
            self._add_char(_ESCAPES[c])
            return i + 1
        while i < n and len(esc) < 6:
            if s[i] not in _HEX:
                raise _Invalid(f"invalid \\u escape: {s[i]!r} is not a hex digit", i)
            esc += s[i]
            i += 1
        self._esc = esc if len(esc) < 6 else ""
        if len(esc) == 6:
            self._add_code_unit(int(esc[2:], 16))
        return i

    def _add_code_unit(self, cp: int) -> None:
        if 0xDC00 <= cp <= 0xDFFF and self._high:  # the low half of a surrogate pair
            high = ord(self._high)
            self._high = ""
            self._parts.append(chr(0x10000 + ((high - 0xD800) << 10) + (cp - 0xDC00)))
        elif 0xD800 <= cp <= 0xDBFF:
            if self._high:
                self._parts.append(self._high)  # a lone high surrogate, kept as json does
            self._high = chr(cp)
        else:
            self._add_char(chr(cp))

    def _add_char(self, c: str) -> None:
        if self._high:
            self._parts.append(self._high)
            self._high = ""
        self._parts.append(c)

    def _end_string(self) -> None:
        if self._high:
            self._parts.append(self._high)
            self._high = ""
        text = "".join(self._parts)
        self._parts = []
        if self._tok == "key":
            self._stack[-1].key = text
            self._tok = None
            self._state = _COLON
        else:
            self._tok = None
            self._place(self._shown + text, replace=True)
            self._shown = ""
            self._after_value()

    def _end_number(self) -> None:
        text = "".join(self._parts)
        if not _NUMBER.fullmatch(text):
            raise _Invalid(f"invalid number {text!r}", self._tok_start - self._base)
        self._tok = None
        self._parts = []
        exact = "." not in text and "e" not in text and "E" not in text
        self._place(int(text) if exact else float(text))
        self._after_value()

    def _number_goes_on(self) -> bool:
        """The number read so far is not one yet, but more digits would make it one: "1."."""
        text = "".join(self._parts)
        return not _NUMBER.fullmatch(text) and bool(_NUMBER.fullmatch(text + "0"))

    def _scan_literal(self, s: str, i: int, n: int) -> int:
        word, value = _LITERALS[self._parts[0][0]]
        have = "".join(self._parts)
        take = s[i : i + len(word) - len(have)]
        have += take
        if not word.startswith(have):
            raise _Invalid(f"invalid literal {have!r}: expected {word!r}", i)
        self._parts = [have]
        if have == word:
            self._tok = None
            self._parts = []
            self._place(value)
            self._after_value()
        return i + len(take)

    # -- building the value -----------------------------------------------------------------

    def _place(self, value: Any, *, replace: bool = False) -> None:
        if not self._stack:
            self._root = value
            return
        top = self._stack[-1]
        if isinstance(top.container, dict):
            top.container[top.key] = value  # type: ignore[index]  # set before any value
        elif replace:
            top.container[-1] = value
        else:
            top.container.append(value)

    def _after_value(self) -> None:
        self._state = _AFTER if self._stack else _DONE

    def _close(self) -> None:
        self._stack.pop()
        self._after_value()

    # -- reporting ---------------------------------------------------------------------------

    def _advance(self, fragment: str) -> None:
        newlines = fragment.count("\n")
        if newlines:
            self._lines += newlines
            self._line_start = self._base + fragment.rfind("\n") + 1
        self._base += len(fragment)

    def _located(
        self, kind: type[PartialJSONError], what: str, position: int, fragment: str
    ) -> PartialJSONError:
        local = fragment[: max(0, position - self._base)]
        line = self._lines + local.count("\n")
        start = self._line_start if "\n" not in local else self._base + local.rfind("\n") + 1
        column = position - start + 1
        path = self._path()
        lead = "the JSON ends early" if kind is TruncatedJSONError else "invalid JSON"
        message = (
            f"{lead} at character {position} (line {line}, column {column}), at {path}: {what}"
        )
        return kind(message, position=position, line=line, column=column, path=path)

    def _path(self) -> str:
        path = "$"
        for depth, frame in enumerate(self._stack):
            c = frame.container
            if isinstance(c, dict):
                if frame.key is not None and (depth + 1 < len(self._stack) or self._state != _KEY):
                    key = frame.key
                    path += f".{key}" if _IDENT.fullmatch(key) else f"[{key!r}]"
            else:
                pending = depth + 1 == len(self._stack) and self._tok is None
                index = len(c) if pending and self._state in (_VALUE, _FIRST_VALUE) else len(c) - 1
                path += f"[{max(index, 0)}]"
        return path

    def _truncated_what(self) -> str:
        if self._tok in ("str", "key"):
            kind = "string value" if self._tok == "str" else "key"
            return f"inside the {kind} that starts at character {self._tok_start}"
        if self._tok is not None:
            return f"inside {''.join(self._parts)!r}, which starts at character {self._tok_start}"
        if not self._stack:
            return "no JSON value in the input"
        top = self._stack[-1]
        kind = "object" if isinstance(top.container, dict) else "array"
        return (
            f"expected {_EXPECTED[self._state]}; the {kind} opened at character {top.start} "
            "is not closed"
        )


def parse_partial(text: str) -> Any:
    """The best partial value of ``text`` (a prefix of a JSON document), in one call."""
    return PartialJSON().feed(text)
