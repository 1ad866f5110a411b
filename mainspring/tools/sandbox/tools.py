"""The built-in ``python`` and ``shell`` tools: untrusted code, run in the sandbox.

``Toolbox([*sandbox_tools()])``; a model (or a node) calls them like any tool, through
the gate and the journal. Files go in and come back as text, or as base64 (a
``"base64:"`` prefix) when they are not UTF-8. A sandbox that cannot start here makes
the call fail with ``SandboxUnavailableError``: the code is never run unsandboxed.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from ..tool import Tool
from .limits import SandboxLimits, SandboxResult
from .sandbox import Sandbox

_B64 = "base64:"


def sandbox_tools(
    sandbox: Sandbox | None = None, *, python: str = "python", shell: str = "shell"
) -> list[Tool]:
    """The ``python`` and ``shell`` tools over one sandbox (default limits unless given)."""
    box = sandbox if sandbox is not None else Sandbox()
    limits: SandboxLimits = box.limits
    timeout = limits.wall_seconds + 10.0  # the sandbox's own wall clock fires first

    async def run_python(code: str, files: dict[str, str] | None = None) -> dict[str, Any]:
        """Run Python 3 code in an isolated sandbox: no network, a private working
        directory (files given here are put in it; files the code writes there come
        back), limits on CPU time, memory, processes and output.

        Args:
            code: The program. Print what you want to see.
            files: Input files by name: text, or "base64:" and the bytes in base64.
        """
        return _result(await box.run_python(code, files=_decode(files or {})))

    async def run_shell(command: str, files: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a POSIX shell command in an isolated sandbox: no network, a private
        working directory, limits on CPU time, memory, processes and output.

        Args:
            command: The command line (sh).
            files: Input files by name: text, or "base64:" and the bytes in base64.
        """
        return _result(await box.run_shell(command, files=_decode(files or {})))

    return [
        Tool(run_python, name=python, timeout=timeout),
        Tool(run_shell, name=shell, timeout=timeout),
    ]


def _decode(files: Mapping[str, str]) -> dict[str, bytes]:
    return {
        name: base64.b64decode(text[len(_B64) :]) if text.startswith(_B64) else text.encode()
        for name, text in files.items()
    }


def _encode(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return _B64 + base64.b64encode(data).decode()


def _result(result: SandboxResult) -> dict[str, Any]:
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "killed_reason": result.killed_reason,
        "truncated": result.truncated,
        "files": {name: _encode(data) for name, data in result.files.items()},
        "duration": round(result.duration, 4),
    }
