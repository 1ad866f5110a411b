"""Several hosts on one machine: network namespaces on a bridge, for scale-out tests.

    with hosts(3) as lab:                        # three namespaces, each a "host"
        url = lab.postgres_url("test", schema)   # PostgreSQL as the namespaces reach it
        proc = lab.spawn(lab.hosts[0], [sys.executable, "-m", "mainspring", "worker", ...])
        lab.partition(lab.hosts[1]); ...; lab.heal(lab.hosts[1])
        lab.kill(proc, signal.SIGKILL)

Each host is a namespace with ``lo`` up and one veth whose other end is a port of a
bridge in the machine's namespace; the bridge has ``10.216.N.1/24``, host ``i`` has
``10.216.N.(10+i)`` and a default route through the bridge, so hosts reach each other and
the bridge address. PostgreSQL listens on the machine's 127.0.0.1 only, which no namespace
can reach: a TCP relay (a thread here) listens on the bridge address and forwards to it,
so the machine's PostgreSQL is neither restarted nor reconfigured.

``partition(host)`` takes the bridge's end of the host's veth down: the host keeps its
address and routes, and its packets (and those to it) are dropped, as with a cut cable or
a dead switch port: open connections hang, they do not fail. ``heal(host)`` brings it up.

Everything is named with this process's pid (and a counter), and torn down on exit
whatever happened: processes killed, namespaces and the bridge deleted. Leftovers of a
killed earlier run (its pid gone) are swept when a lab starts.

Needs root and ``ip`` (iproute2): not root is a skip; root and failing is
:func:`tests.conftest.service_missing` (a failure under ``MAINSPRING_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import service_missing

ROOT = Path(__file__).resolve().parent.parent

_PREFIX = "msnet"  # namespaces: msnet-<pid>-<lab>-<host>; bridges carry it as their alias
_labs = itertools.count()
_PR_SET_PDEATHSIG = 1
# Looked up now: a child between fork and exec must not load anything (other threads may
# hold locks then; the relay's is one).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, however it dies
    (``ip netns exec`` execs the command, which keeps this)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its address, and the bridge's end of its veth."""

    index: int
    netns: str
    address: str
    port: str  # the veth's end on the bridge (in the machine's namespace)


@dataclass
class Spawned:
    """A process started in a host, its output going to ``log``."""

    host: Host
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Relay:
    """TCP forwarder: ``listen`` (in the machine's namespace) to ``target``, in a thread."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self.port = future.result(timeout=10)

    async def _serve(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.listen, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        pipes = asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        try:
            await pipes
        except asyncio.CancelledError:
            pipes.cancel()
            await asyncio.gather(pipes, return_exceptions=True)
        finally:
            self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            # One side gone: close the other (PostgreSQL then ends the backend).
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()


@dataclass
class Lab:
    """The hosts of one test, the relay to PostgreSQL, and the processes started in them."""

    bridge: str
    gateway: str
    hosts: list[Host]
    logs: Path
    relay: Relay | None = None
    spawned: list[Spawned] = field(default_factory=list)

    def postgres_url(self, database: str = "test", schema: str | None = None) -> str:
        """A store URL for PostgreSQL as seen from inside the hosts (through the relay)."""
        if self.relay is None:
            raise RuntimeError("this lab has no relay to PostgreSQL: hosts(..., postgres=...)")
        url = f"postgresql://postgres@{self.gateway}:{self.relay.port}/{database}"
        return url if schema is None else f"{url}?schema={schema}"

    def spawn(
        self, host: Host, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Spawned:
        """Start ``argv`` inside ``host`` (cwd: the repository), output to a log file.

        ``ip netns exec`` execs the command, so the process's pid is the command's own.
        ``env`` is added to this process's environment (Python's output unbuffered, so
        the log is current).
        """
        log = self.logs / f"{host.netns}-{len(self.spawned)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        spawned = Spawned(host, proc, log)
        self.spawned.append(spawned)
        return spawned

    def run(self, host: Host, argv: Sequence[str], timeout: float = 60) -> str:
        """Run ``argv`` inside ``host`` to the end; its output, or an error with it."""
        done = subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv} in {host.netns} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def partition(self, host: Host) -> None:
        """Cut ``host`` off: its packets, and those to it, are dropped from now on."""
        _ip("link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.port, "up")

    @staticmethod
    def kill(spawned: Spawned, sig: int = signal.SIGKILL) -> None:
        if spawned.proc.poll() is None:
            os.kill(spawned.pid, sig)
            if sig == signal.SIGKILL:
                spawned.proc.wait(timeout=30)

    def close(self) -> None:
        """Kill what runs, stop the relay, delete the namespaces and the bridge."""
        for host in self.hosts:  # healed first: the killed processes' sockets can close
            _ip("link", "set", host.port, "up", check=False)
        for spawned in self.spawned:
            with contextlib.suppress(ProcessLookupError):
                spawned.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.proc.wait(timeout=30)
        if self.relay is not None:
            self.relay.stop()
        for host in self.hosts:
            _delete_netns(host.netns)
            # A namespace lives on, nameless, while sockets of its killed processes still
            # retransmit (into a partition: minutes); its veth with it, unless deleted here.
            _ip("link", "del", host.port, check=False)
        _ip("link", "del", self.bridge, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_netns(name: str) -> None:
    """Kill whatever still runs in namespace ``name`` (children of what we spawned, too),
    then delete it: its veth goes with it."""
    for pid in _ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def sweep_stale() -> None:
    """Delete the namespaces and bridges of labs whose process is gone (a killed run)."""
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if parts[0] == _PREFIX and len(parts) == 4 and not _pid_alive(int(parts[1])):
            _delete_netns(name)
    for link in json.loads(_ip("-j", "link", "show", "type", "bridge", check=False) or "[]"):
        alias = str(link.get("ifalias", "")).split("-")
        if alias[0] == _PREFIX and len(alias) == 3 and not _pid_alive(int(alias[1])):
            for port in json.loads(_ip("-j", "link", "show", "master", link["ifname"]) or "[]"):
                _ip("link", "del", port["ifname"], check=False)
            _ip("link", "del", link["ifname"], check=False)


def _free_subnet() -> int:
    """A third octet N with 10.216.N.0/24 unused on this machine (other labs run at once)."""
    used = _ip("-4", "-o", "addr", "show")
    start = os.getpid() % 250
    for offset in range(250):
        n = (start + offset) % 250 + 1
        if f"inet 10.216.{n}." not in used:
            return n
    raise RuntimeError("no free 10.216.N.0/24 subnet for a network-namespace lab")


def unavailable() -> str | None:
    """Why labs cannot be made here (skip, not fail), or None: only "not root" counts."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add)"
    return None


def _build(lab: Lab, count: int, tag: str, short: str, subnet: int) -> None:
    _ip("link", "add", lab.bridge, "type", "bridge")
    _ip("link", "set", lab.bridge, "alias", f"{_PREFIX}-{tag}")
    _ip("addr", "add", f"{lab.gateway}/24", "dev", lab.bridge)
    _ip("link", "set", lab.bridge, "up")
    for i in range(count):
        host = Host(i, f"{_PREFIX}-{tag}-{i}", f"10.216.{subnet}.{10 + i}", f"msp{short}x{i}")
        inner = f"msi{short}x{i}"
        _ip("netns", "add", host.netns)
        lab.hosts.append(host)  # from here on, close() deletes it
        _ip("link", "add", host.port, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", host.netns)
        _ip("link", "set", host.port, "master", lab.bridge)
        _ip("link", "set", host.port, "up")
        _ip("link", "set", "lo", "up", netns=host.netns)
        _ip("link", "set", inner, "name", "eth0", netns=host.netns)
        _ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.netns)
        _ip("link", "set", "eth0", "up", netns=host.netns)
        _ip("route", "add", "default", "via", lab.gateway, netns=host.netns)


@contextlib.contextmanager
def hosts(count: int, postgres: tuple[str, int] | None = ("127.0.0.1", 5432)) -> Iterator[Lab]:
    """``count`` hosts (namespaces) on a bridge, and a relay to ``postgres`` on the bridge.

    Skips when not root; fails (``MAINSPRING_REQUIRE_SERVICES=1``) or skips when root
    and the namespaces cannot be made. Everything is deleted on exit.
    """
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("ip") is None:
        service_missing("network-namespace tests need iproute2's `ip` command")
    if not 0 < count < 100:
        raise ValueError(f"hosts(count): 1 to 99 hosts, not {count}")
    # The pid and a counter: unique among concurrent test processes; short, as interface
    # names are at most 15 characters ("msp" + tag + "x" + index).
    n = next(_labs)
    tag, short = f"{os.getpid()}-{n}", f"{os.getpid()}l{n}"
    with tempfile.TemporaryDirectory(prefix="msnet-") as logs:
        try:
            sweep_stale()
            subnet = _free_subnet()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            service_missing(f"cannot make network namespaces: {exc}")
        lab = Lab(f"msb{short}", f"10.216.{subnet}.1", [], Path(logs))
        try:
            try:
                _build(lab, count, tag, short, subnet)
                if postgres is not None:
                    lab.relay = Relay(lab.gateway, postgres)
                    lab.relay.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                service_missing(f"cannot make network namespaces: {exc}")
            yield lab
        finally:
            lab.close()
