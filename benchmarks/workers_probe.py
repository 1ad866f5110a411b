"""W16's probe: a UDP socket on 127.0.0.1 the jobs of every system report to (workers_jobs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # start, step, done, ready, recovered, polled
    job: str
    pid: int
    at: float  # the sender's time.time()
    extra: str


class Probe(asyncio.DatagramProtocol):
    """Collects the datagrams; coroutines wait for the ones they need."""

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = defaultdict(list)  # by job ("-": the workers')
        self.done: set[str] = set()
        self.port = 0
        self._changed = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> Probe:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for thousands of datagrams: a burst of job ends while this process is busy or
        # descheduled (a loaded machine) must not overflow the default ~200 KB and be lost.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def reset(self) -> None:
        """Forget every event (a new system: its job ids may be the last one's)."""
        self.events.clear()
        self.done.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: object) -> None:
        kind, job, pid, at, extra = data.decode().split("|", 4)
        event = Event(kind, job, int(pid), float(at), extra)
        self.events[job].append(event)
        if kind == "done":
            self.done.add(job)
        self._changed.set()

    async def until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``check()`` holds (looked at on every datagram and every second)."""
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"W16 probe: no {what} within {timeout:.0f} s")
            self._changed.clear()
            if check():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))

    def first(self, job: str, kind: str, pid: int | None = None) -> Event | None:
        for event in self.events.get(job, ()):
            if event.kind == kind and (pid is None or event.pid == pid):
                return event
        return None

    async def wait_event(self, job: str, kind: str, timeout: float) -> Event:
        await self.until(lambda: self.first(job, kind) is not None, timeout, f"{kind} of {job}")
        event = self.first(job, kind)
        assert event is not None
        return event

    async def wait_done(
        self, jobs: list[str], timeout: float, alive: Callable[[], object] = lambda: None
    ) -> None:
        """Until every job of ``jobs`` ended; ``alive()`` raises if the workers died."""

        def check() -> bool:
            alive()
            return self.done.issuperset(jobs)

        try:
            await self.until(check, timeout, f"end of {len(jobs)} jobs")
        except TimeoutError as exc:
            missing = len(set(jobs) - self.done)
            raise TimeoutError(f"{exc} ({missing} not ended or their datagrams lost)") from None

    async def wait_kind(self, kind: str, pid: int, timeout: float) -> Event:
        await self.until(lambda: self.first("-", kind, pid) is not None, timeout, kind)
        event = self.first("-", kind, pid)
        assert event is not None
        return event

    async def wait_ready(self, pid: int, process: subprocess.Popen[bytes], timeout: float) -> None:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"worker {pid} exited with {process.returncode} before ready")
            return self.first("-", "ready", pid) is not None

        await self.until(ready, timeout, f"ready from worker {pid}")

    async def wait_other(self, job: str, not_pid: int, after: float, timeout: float) -> Event:
        """The first event of ``job`` sent by another process than ``not_pid`` after ``after``."""

        def find() -> Event | None:
            for event in self.events.get(job, ()):
                if event.pid != not_pid and event.at >= after:
                    return event
            return None

        await self.until(lambda: find() is not None, timeout, f"takeover of {job}")
        found = find()
        assert found is not None
        return found
