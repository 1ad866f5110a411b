"""Shared pieces of the sandbox tests: skip when bwrap cannot start, find processes by token."""

from __future__ import annotations

import os
from pathlib import Path

from mainspring.tools.sandbox import Sandbox
from tests.conftest import service_missing


def require_sandbox() -> Sandbox:
    """A Sandbox, or skip (fail under MAINSPRING_REQUIRE_SERVICES=1: .ci/run installs bwrap)."""
    why = Sandbox.available()
    if why is not None:
        service_missing(f"the sandbox cannot start here: {why}")
    return Sandbox()


def pids_with(token: str) -> list[int]:
    """Host pids whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if token.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")
