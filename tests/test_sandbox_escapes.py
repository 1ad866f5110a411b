"""Escape attempts against the sandbox, each shown contained.

Host files and secrets, writes outside, sockets (the internet and this machine's own
PostgreSQL and Redis, shown reachable from the host first), privileges, fork and
memory bombs, endless loops, output floods, disk floods, symlink tricks, and a
parent killed mid-run. Everything runs for real in bubblewrap.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import anyio
import pytest

from mainspring.tools.sandbox import Sandbox, SandboxLimits, SandboxResult
from mainspring.tools.sandbox._workdir import PREFIX, sweep_stale
from tests.conftest import service_missing
from tests.sandbox_support import host_uid, pids_with, require_sandbox

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sandbox() -> Sandbox:
    return require_sandbox()


def _token() -> str:
    return f"{time.time_ns() % 10**6}.{uuid.uuid4().int % 10**6}"


async def _probe(sandbox: Sandbox, paths: list[str]) -> dict[str, str]:
    """What the sandbox gets reading each path: its first bytes, or the error's name."""
    code = textwrap.dedent(f"""
        import json
        seen = {{}}
        for path in {paths!r}:
            try:
                seen[path] = open(path, 'rb').read(200).decode('latin-1')
            except IsADirectoryError:
                import os
                seen[path] = 'dir:' + ','.join(sorted(os.listdir(path)))
            except Exception as exc:
                seen[path] = type(exc).__name__
        print(json.dumps(seen))
    """)
    result = await sandbox.run_python(code)
    assert result.ok, result.stderr
    seen: dict[str, str] = json.loads(result.stdout)
    return seen


# --- host files and secrets ------------------------------------------------------------


async def test_host_files_are_not_there(sandbox: Sandbox) -> None:
    paths = ["/etc/shadow", "/etc/passwd", "/root", "/root/.bashrc", "/home", "/work",
             str(REPO / "pyproject.toml"), "/work/main/pyproject.toml", "/var/log", "/etc/hostname"]  # fmt: skip
    assert (REPO / "pyproject.toml").exists()  # it is there on the host
    seen = await _probe(sandbox, paths)
    assert seen == dict.fromkeys(paths, "FileNotFoundError")


async def test_the_hosts_processes_are_not_visible(sandbox: Sandbox) -> None:
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    result = await sandbox.run_python(code)
    pids = json.loads(result.stdout)
    assert len(pids) <= 4 and 1 in pids  # its own pid namespace: bwrap's init, python
    seen = await _probe(sandbox, ["/proc/1/cmdline", "/proc/1/environ"])
    assert "systemd" not in seen["/proc/1/cmdline"] and "init" not in seen["/proc/1/cmdline"]


async def test_environment_secrets_do_not_leak(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("PGPASSWORD", secret)
    assert os.environ["OPENAI_API_KEY"] == secret
    result = await sandbox.run_shell(
        "env; cat /proc/self/environ /proc/1/environ /proc/*/environ 2>&1; "
        "python3 -c 'import os; print(dict(os.environ))'"
    )
    everything = result.stdout + result.stderr
    assert "HOME=/sandbox" in everything  # it did read its environment
    assert secret not in everything and "OPENAI_API_KEY" not in everything
    assert "PGPASSWORD" not in everything


# --- writes outside -------------------------------------------------------------------


async def test_writes_outside_the_working_dir_fail_and_the_host_is_untouched(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("host data")
    targets = [str(canary), str(tmp_path / "new.txt"), "/usr/lib/evil", "/etc/passwd",
               "/evil", str(REPO / "evil.txt"), "/root/evil", "/proc/sys/kernel/hostname"]  # fmt: skip
    code = textwrap.dedent(f"""
        for path in {targets!r}:
            try:
                open(path, 'w').write('owned')
                print('wrote', path)
            except OSError as exc:
                print('refused', path, type(exc).__name__)
    """)
    result = await sandbox.run_python(code)
    assert result.ok, result.stderr
    assert "wrote" not in result.stdout and result.stdout.count("refused") == len(targets)
    assert canary.read_text() == "host data"
    assert not (tmp_path / "new.txt").exists() and not (REPO / "evil.txt").exists()
    assert not Path("/usr/lib/evil").exists() and not Path("/evil").exists()


# --- network --------------------------------------------------------------------------


def _host_reaches(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(("service", "port"), [("PostgreSQL", 5432), ("Redis", 6379)])
async def test_the_hosts_local_services_are_unreachable(
    sandbox: Sandbox, service: str, port: int
) -> None:
    if not _host_reaches(port):
        service_missing(f"{service} is not listening on 127.0.0.1:{port}")
    code = textwrap.dedent(f"""
        import socket
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=3)
            print('connected')
        except OSError as exc:
            print(type(exc).__name__)
    """)
    result = await sandbox.run_python(code)
    assert result.stdout == "ConnectionRefusedError\n"  # its own loopback: nobody listens


async def test_the_internet_and_dns_are_unreachable(sandbox: Sandbox) -> None:
    code = textwrap.dedent("""
        import socket
        for host in ['1.1.1.1', '8.8.8.8']:
            try:
                socket.create_connection((host, 443), timeout=3)
                print('connected')
            except OSError as exc:
                print(exc.errno)
        try:
            socket.getaddrinfo('example.com', 443)
            print('resolved')
        except OSError as exc:
            print('gaierror')
        print([name for _, name in socket.if_nameindex()])
    """)
    result = await sandbox.run_python(code)
    import errno

    assert result.stdout.split("\n")[:4] == [str(errno.ENETUNREACH)] * 2 + ["gaierror", "['lo']"]


# --- privileges -----------------------------------------------------------------------


async def test_the_code_is_not_root_and_has_no_capabilities(sandbox: Sandbox) -> None:
    token = _token()
    async with anyio.create_task_group() as tg:
        results: dict[str, SandboxResult] = {}

        async def run() -> None:
            results["r"] = await sandbox.run_shell(
                f"id; grep Cap /proc/self/status; unshare -U true && echo nested-userns; "
                f"unshare -r true && echo nested-root; sleep {token}"
            )

        tg.start_soon(run)
        with anyio.fail_after(5):
            while not (pids := pids_with(f"sleep\0{token}")):
                await anyio.sleep(0.02)
        if os.geteuid() == 0:
            assert host_uid(pids[0]) == 65534  # nobody on the host, not root
        os.kill(pids[0], signal.SIGTERM)
    out = results["r"].stdout
    assert "uid=65534" in out and "gid=65534" in out
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert f"{cap}:\t0000000000000000" in out
    assert "nested" not in out  # no further user namespaces


# --- bombs and loops ------------------------------------------------------------------


async def test_a_fork_bomb_is_bounded_by_the_process_limit(sandbox: Sandbox) -> None:
    code = textwrap.dedent("""
        import os, time
        made = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                made += 1
        except BlockingIOError:
            print(made)
    """)
    box = Sandbox(SandboxLimits(processes=20, wall_seconds=10))
    started = time.perf_counter()
    result = await box.run_python(code)
    assert result.ok, result.stderr
    assert 5 <= int(result.stdout) < 20
    assert time.perf_counter() - started < 5  # the children went with the sandbox
    # The classic shell bomb: forks fail at the limit, the sandbox's own shell goes on.
    shell = await box.run_shell("bomb() { bomb | bomb & }; bomb; sleep 1; echo survived")
    assert "Cannot fork" in shell.stderr and shell.stdout == "survived\n"
    assert shell.duration < 8


async def test_a_memory_bomb_meets_the_memory_limit(sandbox: Sandbox) -> None:
    box = Sandbox(SandboxLimits(memory_mb=128))
    result = await box.run_python("x = []\nwhile True:\n    x.append(bytearray(10**6))")
    assert result.exit_code == 1 and "MemoryError" in result.stderr
    big = await box.run_python("b = bytearray(1 << 30)")
    assert "MemoryError" in big.stderr


async def test_an_endless_loop_meets_the_cpu_limit(sandbox: Sandbox) -> None:
    result = await Sandbox(SandboxLimits(cpu_seconds=1)).run_python("while True: pass")
    assert result.killed_reason == "cpu limit" and not result.timed_out
    assert result.exit_code == 128 + signal.SIGXCPU and result.duration < 5


async def test_a_sleeping_loop_meets_the_wall_timeout(sandbox: Sandbox) -> None:
    box = Sandbox(SandboxLimits(wall_seconds=1))
    result = await box.run_python(
        "import time\nprint('started', flush=True)\nwhile True: time.sleep(1)"
    )
    assert result.timed_out and result.killed_reason == "wall timeout"
    assert result.stdout == "started\n" and 1 <= result.duration < 3


async def test_huge_output_is_truncated_and_memory_stays_bounded(sandbox: Sandbox) -> None:
    box = Sandbox(SandboxLimits(output_bytes=1_000_000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await box.run_shell("yes 'a long line of output to flood the host'")
    assert result.truncated and result.killed_reason == "output limit"
    assert len(result.stdout) == 1_000_000 and result.duration < 5
    err = await box.run_python("import sys\nwhile True: sys.stderr.write('e' * 65536)")
    assert err.truncated and len(err.stderr) == 1_000_000
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 64 * 1024


async def test_a_disk_flood_is_stopped(sandbox: Sandbox) -> None:
    box = Sandbox(SandboxLimits(disk_bytes=5_000_000, file_bytes=1_000_000, wall_seconds=20))
    many = await box.run_python(
        "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 900_000)\n    i += 1"
    )
    assert many.killed_reason == "disk limit" and many.duration < 10
    assert sum(map(len, many.files.values())) <= 5_000_000 and many.truncated
    big = await box.run_shell("head -c 2000000 /dev/zero > /tmp/big")
    assert big.killed_reason == "file size limit"
    entries = await Sandbox(SandboxLimits(max_entries=500)).run_shell(
        "i=0; while :; do : > /tmp/f$i; i=$((i+1)); done"
    )
    assert entries.killed_reason == "disk limit"


# --- symlink tricks -------------------------------------------------------------------


async def test_produced_symlinks_and_special_files_are_never_followed(
    sandbox: Sandbox,
) -> None:
    code = textwrap.dedent("""
        import os
        os.remove('given.txt')
        os.symlink('/etc/passwd', 'given.txt')  # a given file swapped for a link
        os.symlink('/etc/shadow', 'shadow')
        os.symlink('/root/.bashrc', 'bashrc')
        os.symlink('/work', 'work')
        os.symlink('/', 'root')
        os.makedirs('sub')
        os.symlink('../../../../etc/hostname', 'sub/up')
        os.mkfifo('fifo')
        try:
            os.link('/usr/bin/python3', 'hard')
        except OSError as exc:
            print('link', type(exc).__name__)
        open('real.txt', 'w').write('ok')
    """)
    result = await sandbox.run_python(code, files={"given.txt": b"mine"})
    assert result.ok, result.stderr
    assert result.stdout == "link OSError\n"  # EXDEV: a different mount
    assert result.files == {"real.txt": b"ok"}  # and nothing read through a link


# --- the parent dies ------------------------------------------------------------------


async def test_a_killed_parent_leaves_no_process_behind(tmp_path: Path) -> None:
    require_sandbox()
    token = _token()
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import anyio
        from mainspring.tools.sandbox import Sandbox
        anyio.run(Sandbox().run_shell, "sleep {token} & sleep {token}")
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        with anyio.fail_after(10):
            while len(pids_with(f"sleep\0{token}")) < 2:
                await anyio.sleep(0.05)
        parent.kill()
        parent.wait()
        with anyio.fail_after(5):
            while pids_with(token):
                await anyio.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    # Its run dir is left behind (nothing could remove it); the next process sweeps it.
    left = [d for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}{parent.pid}-*")]
    assert len(left) == 1 and token in (left[0] / "program" / "main.sh").read_text()
    assert sweep_stale() >= 1 and not left[0].exists()
