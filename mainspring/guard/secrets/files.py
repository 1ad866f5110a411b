"""Secrets from files: a directory of one file per secret (Docker and Kubernetes mount
them so), a JSON object, or a ``.env`` file; a changed file is read again.

Rotation needs no restart: each lookup compares the file's identity (inode, size,
modification and change times) with what it read last, at most every ``check_every``
seconds, and reads it again when it changed. Kubernetes swaps a ``..data`` symlink to a
new directory when it rotates a mounted secret; following the link gives a new inode.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Literal

from .protocol import SecretsError, check_name

Format = Literal["auto", "dir", "json", "env"]
_Stamp = tuple[int, int, int, int]


class FileSecrets:
    """``FileSecrets("/run/secrets")`` (a directory: file ``NAME`` holds secret ``NAME``,
    one trailing newline dropped; hidden files are not secrets), ``FileSecrets("app.json")``
    (an object of string values) or ``FileSecrets(".env")`` (``NAME=value`` lines)."""

    def __init__(self, path: str | os.PathLike[str], *, format: Format = "auto",
                 check_every: float = 0.0) -> None:  # fmt: skip
        self.path = Path(path)
        if check_every < 0:
            raise ValueError(f"FileSecrets: check_every={check_every} must be >= 0 seconds")
        self.format = _format_of(self.path) if format == "auto" else format
        if self.format not in ("dir", "json", "env"):
            raise ValueError(f"FileSecrets: format={format!r}: use 'dir', 'json', 'env' or 'auto'")
        self.check_every = check_every
        self._lock = threading.Lock()
        # per file read: (its stamp, when last checked, what it held)
        self._seen: dict[str, tuple[_Stamp | None, float, dict[str, str] | str | None]] = {}
        self._root = os.fspath(self.path)

    def __repr__(self) -> str:
        return f"FileSecrets({str(self.path)!r}, format={self.format!r})"

    def get(self, name: str) -> str | None:
        check_name(name)
        if self.format == "dir":
            if name.startswith(".") or "/" in name or name in ("..", "."):
                return None  # never a hidden entry (``..data``) or a path out of the directory
            value = self._read(os.path.join(self._root, name))
            return value if isinstance(value, str) and value else None
        held = self._read(self._root)
        return (held.get(name) or None) if isinstance(held, dict) else None

    __call__ = get

    def _read(self, path: str) -> dict[str, str] | str | None:
        now = time.monotonic()
        seen = self._seen.get(path)
        if seen is not None and self.check_every and now - seen[1] < self.check_every:
            return seen[2]
        stamp = _stamp(path)
        if seen is not None and seen[0] == stamp:
            self._seen[path] = (stamp, now, seen[2])
            return seen[2]
        with self._lock:  # one reader per change; the others wait for what it read
            seen = self._seen.get(path)
            if seen is not None and seen[0] == stamp:
                return seen[2]
            value = None if stamp is None else self._parse(path)
            self._seen[path] = (stamp, now, value)
            return value

    def _parse(self, path: str) -> dict[str, str] | str | None:
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsError(
                f"secrets file {str(path)!r} cannot be read: {type(exc).__name__}"
            ) from None
        if self.format == "dir":
            return text[:-1] if text.endswith("\n") else text
        if self.format == "json":
            return _parse_json(path, text)
        return parse_dotenv(text, path)


def _format_of(path: Path) -> Format:
    if path.is_dir():
        return "dir"
    if path.suffix.lower() == ".json":
        return "json"
    if path.name.endswith(".env") or path.name.startswith(".env"):
        return "env"
    raise ValueError(
        f"FileSecrets({str(path)!r}): not a directory, a .json or a .env file; "
        "pass format='dir', 'json' or 'env'"
    )


def _stamp(path: str) -> _Stamp | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes rotation is a new inode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse_json(path: str, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        # the decoder's message quotes no value, only where it stopped
        raise SecretsError(f"secrets file {str(path)!r} is not JSON: line {exc.lineno}") from None  # type: ignore[attr-defined]
    if not isinstance(data, dict):
        raise SecretsError(
            f"secrets file {str(path)!r} must hold a JSON object of names to strings"
        )
    wrong = sorted(k for k, v in data.items() if not isinstance(v, str))
    if wrong:
        raise SecretsError(
            f"secrets file {str(path)!r}: the values of {', '.join(map(repr, wrong))} are not "
            "strings; quote them"
        )
    return data


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def parse_dotenv(text: str, where: str = ".env") -> dict[str, str]:
    """``NAME=value`` lines (``export NAME=value`` too), ``#`` comments, values bare, in
    single quotes (taken as written) or in double quotes (``\\n``, ``\\"`` escapes)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.replace("_", "a").replace(".", "a").isalnum():
            raise SecretsError(f"{where}: line {number} is not NAME=value")
        found[name] = _dotenv_value(value.strip(), where, number)
    return found


def _dotenv_value(value: str, where: str, number: int) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = _closing(value, quote)
        if end < 0:
            raise SecretsError(f"{where}: line {number}: the value's {quote} is never closed")
        inner = value[1:end]
        if quote == "'":
            return inner
        out, i = [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(_ESCAPES.get(inner[i + 1], "\\" + inner[i + 1]))
                i += 2
            else:
                out.append(inner[i])
                i += 1
        return "".join(out)
    comment = value.find(" #")
    return (value if comment < 0 else value[:comment]).rstrip()


def _closing(value: str, quote: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1
