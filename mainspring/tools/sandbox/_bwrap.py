"""The bubblewrap command line of a sandbox, and the check that it can start here.

The sandbox sees a read-only ``/usr`` (and the usual ``/bin``, ``/lib`` symlinks into
it), a handful of harmless ``/etc`` files, its own ``/proc`` (a new pid namespace),
a minimal read-only ``/dev``, its working dir at ``/sandbox`` and a private ``/tmp``
(both host temporary dirs made for the run), and the program at ``/run/program``.
Nothing else of the host: not ``/root``, ``/home``, ``/work``, the host's ``/tmp``.
It runs as uid/gid 65534 with no capabilities, in new user, pid, network (only ``lo``),
ipc, uts and cgroup namespaces, may not make further user namespaces, gets a clean
environment and a new session, and dies with its parent. Run as root, bubblewrap
itself is started as uid 65534 so that the sandbox is nobody on the host too.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .limits import SandboxLimits

SANDBOX_UID = 65534  # nobody: inside the sandbox, and on the host when we are root
WORKDIR = "/sandbox"
PROGRAM_DIR = "/run/program"
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKDIR,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
# /etc files that help programs run and say nothing about the host.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
PRLIMIT = "/usr/bin/prlimit"


def find_bwrap(path: str | None) -> str | None:
    if path is not None:
        return path if os.access(path, os.X_OK) and os.path.isfile(path) else None
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None
    )


def default_python() -> str:
    """A system Python under /usr (the sandbox's view); else this process's interpreter."""
    here = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    if here.startswith("/usr/"):
        return here
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return here


def python_binds(python: str) -> list[str]:
    """Read-only binds that make ``python`` runnable: its prefix when it is not under /usr."""
    real = os.path.realpath(python)
    if real.startswith("/usr/"):
        return []
    prefix = str(Path(real).parent.parent)  # <prefix>/bin/python3.x
    return ["--ro-bind", prefix, prefix]


def drop_to_nobody() -> bool:
    """Run bubblewrap as uid 65534 on the host when we are root (never root in a sandbox)."""
    return os.geteuid() == 0


def run_binds(workdir: str, tmpdir: str, program_dir: str) -> list[str]:
    """The run's own dirs: its working dir and /tmp (writable), its program (read-only)."""
    writable = ["--bind", workdir, WORKDIR, "--bind", tmpdir, "/tmp", "--bind", tmpdir, "/dev/shm"]
    return [*writable, "--ro-bind", program_dir, PROGRAM_DIR]


def command(
    bwrap: str, limits: SandboxLimits, *, python: str, binds: list[str], chdir: str = WORKDIR
) -> list[str]:
    """bwrap's arguments up to ``--`` and the rlimits wrapper; the program's argv follows."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]  # + pid, net, ipc...
    argv += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.join("/", name)
        if os.path.islink(target):
            argv += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            argv += ["--ro-bind", target, target]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    argv += python_binds(python)
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += [*binds, "--remount-ro", "/", "--chdir", chdir, "--clearenv"]
    for key, value in ENV.items():
        argv += ["--setenv", key, value]
    memory = limits.memory_mb * 1024 * 1024
    rlimits = [
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",  # SIGXCPU, then SIGKILL
        f"--as={memory}:{memory}",
        f"--nproc={limits.processes}:{limits.processes}",
        f"--fsize={limits.file_bytes}:{limits.file_bytes}",
        "--core=0:0",
    ]
    return [*argv, "--", PRLIMIT, *rlimits, "--"]


def spawn_options() -> dict[str, object]:
    """How to start bubblewrap: no inherited environment, its own process group."""
    options: dict[str, object] = {"env": {}, "start_new_session": True}
    if drop_to_nobody():
        options.update(user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[])
    return options


@functools.cache
def unavailable(bwrap: str | None, python: str) -> str | None:
    """Why a sandbox cannot start here (None if it can): bwrap is run once, for real."""
    found = find_bwrap(bwrap)
    if found is None:
        return f"bubblewrap (bwrap) was not found at {bwrap or 'PATH'}"
    if not os.access(PRLIMIT, os.X_OK):
        return f"{PRLIMIT} (util-linux) was not found"
    argv = command(found, SandboxLimits(), python=python, binds=[], chdir="/")
    argv += [python, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, **spawn_options())  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{found} could not be run: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        return f"{found} failed to make a sandbox ({said})"
    return None
