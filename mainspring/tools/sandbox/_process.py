"""Running one sandbox process: its input fed, its output read under a cap, its limits kept.

Output is read as it comes and kept up to ``output_bytes`` per stream: past that the
sandbox is killed (a program printing without end never fills our memory). A
watchdog measures the run's working dir and ``/tmp``; the wall clock bounds the
whole run. Killing is SIGKILL to bubblewrap's process group: its child dies with it
(``--die-with-parent``) and the kernel then kills every process of the sandbox's pid
namespace. A cancelled caller kills the sandbox the same way before it returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ._workdir import RunDirs
from .limits import SandboxLimits

_SIGNAL_REASONS: dict[int, str] = {signal.SIGXCPU: "cpu limit", signal.SIGXFSZ: "file size limit"}


@dataclass(slots=True)
class Outcome:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit_code: int = 0
    killed_reason: str | None = None
    truncated: bool = False
    duration: float = 0.0


@dataclass(slots=True)
class _Killer:
    process: anyio.abc.Process
    outcome: Outcome

    def kill(self, reason: str) -> None:
        if self.outcome.killed_reason is None:
            self.outcome.killed_reason = reason
        _kill(self.process)


def _kill(process: anyio.abc.Process) -> None:
    if process.returncode is not None:
        return  # reaped: its pid (and group id) may belong to someone else now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # bwrap and anything of its group
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes,
    limits: SandboxLimits,
    dirs: RunDirs,
    spawn: dict[str, Any],
) -> Outcome:
    outcome = Outcome()
    started = time.perf_counter()
    process = await anyio.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **spawn
    )
    killer = _Killer(process, outcome)
    try:
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(_feed, process, stdin)
            helpers.start_soon(_watch_disk, dirs, limits, killer)
            with anyio.move_on_after(limits.wall_seconds) as clock:
                async with anyio.create_task_group() as readers:
                    assert process.stdout is not None and process.stderr is not None
                    readers.start_soon(_drain, process.stdout, outcome.stdout, limits, killer)
                    readers.start_soon(_drain, process.stderr, outcome.stderr, limits, killer)
                    await process.wait()
            if clock.cancelled_caught:
                killer.kill("wall timeout")
            helpers.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                _kill(process)
            await process.wait()
            await process.aclose()
    outcome.duration = time.perf_counter() - started
    code = process.returncode or 0
    outcome.exit_code = 128 - code if code < 0 else code  # killed bwrap: -9 -> 137
    if outcome.killed_reason is None and outcome.exit_code > 128:
        outcome.killed_reason = _SIGNAL_REASONS.get(outcome.exit_code - 128)
    return outcome


async def _feed(process: anyio.abc.Process, data: bytes) -> None:
    assert process.stdin is not None
    try:
        if data:
            await process.stdin.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the program exited without reading all of it
    finally:
        await process.stdin.aclose()


async def _drain(
    stream: anyio.abc.ByteReceiveStream, into: bytearray, limits: SandboxLimits, killer: _Killer
) -> None:
    async for chunk in stream:
        room = limits.output_bytes - len(into)
        into += chunk[:room]
        if len(chunk) > room:
            killer.outcome.truncated = True
            killer.kill("output limit")
            return


async def _watch_disk(dirs: RunDirs, limits: SandboxLimits, killer: _Killer) -> None:
    while True:
        await anyio.sleep(limits.disk_check_seconds)
        used, entries = await anyio.to_thread.run_sync(dirs.usage, limits.max_entries)
        if used > limits.disk_bytes or entries > limits.max_entries:
            killer.outcome.truncated = True
            killer.kill("disk limit")
            return
