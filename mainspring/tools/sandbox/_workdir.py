"""A run's host dirs: the given files written in, the produced files read back safely.

Each run gets a fresh host temporary dir (mode 0700; owned by uid 65534 when we are
root) holding ``work`` (the sandbox's ``/sandbox``), ``tmp`` (its ``/tmp``) and
``program`` (read-only: the code to run). Given file names are checked to stay inside
``work``. Reading back never follows a symlink, never opens anything but a regular
file (a FIFO cannot block it), and reads through directory file descriptors so that
a path swapped for a symlink mid-walk leads nowhere: what comes back is only what
the code wrote under its working dir, capped in number and size.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from ._bwrap import SANDBOX_UID, drop_to_nobody
from .limits import SandboxLimits

PREFIX = "mainspring-sandbox-"  # + the pid of the process that made the dir
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def checked_name(name: str) -> str:
    """A given file's relative path, or ValueError if it could land outside the working dir."""
    parts = name.split("/")
    if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"sandbox file name {name!r} must be a relative path without '.', '..' or empty "
            "parts (e.g. 'data/input.csv')"
        )
    return name


@dataclass(frozen=True, slots=True)
class RunDirs:
    base: str
    work: str
    tmp: str
    program: str

    @classmethod
    def create(cls, files: Mapping[str, bytes], program_name: str, program: bytes) -> RunDirs:
        names = {checked_name(name): data for name, data in files.items()}
        base = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        dirs = cls(base, f"{base}/work", f"{base}/tmp", f"{base}/program")
        try:
            for path in (dirs.work, dirs.tmp, dirs.program):
                os.mkdir(path, 0o755)
            with open(f"{dirs.program}/{program_name}", "xb") as out:
                out.write(program)
            for name, data in names.items():
                dirs._write(name, data)
            if drop_to_nobody():
                dirs._give_to_sandbox()
        except BaseException:
            dirs.remove()
            raise
        return dirs

    def _write(self, name: str, data: bytes) -> None:
        parent = os.path.dirname(name)
        if parent:
            os.makedirs(f"{self.work}/{parent}", 0o755, exist_ok=True)
        with open(f"{self.work}/{name}", "xb") as out:  # x: never through an existing entry
            out.write(data)

    def _give_to_sandbox(self) -> None:
        os.chown(self.base, SANDBOX_UID, SANDBOX_UID)
        for top in (self.work, self.tmp):
            for root, _dirnames, filenames in os.walk(top):
                os.chown(root, SANDBOX_UID, SANDBOX_UID)
                for name in filenames:
                    os.chown(f"{root}/{name}", SANDBOX_UID, SANDBOX_UID)

    def usage(self, max_entries: int) -> tuple[int, int]:
        """Bytes on disk and entries under ``work`` and ``tmp``; counting stops past the cap."""
        used = entries = 0
        for top in (self.work, self.tmp):
            for _root, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
                for name in dirnames + filenames:
                    entries += 1
                    try:
                        used += os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
                if entries > max_entries:
                    return used, entries
        return used, entries

    def produced(
        self, given: Mapping[str, bytes], limits: SandboxLimits
    ) -> tuple[dict[str, bytes], bool]:
        """Regular files created or changed under ``work``, and whether some were left out."""
        found: dict[str, bytes] = {}
        truncated = False
        total = 0
        for root, _dirnames, filenames, dirfd in os.fwalk(self.work, follow_symlinks=False):
            for name in sorted(filenames):
                rel = os.path.relpath(f"{root}/{name}", self.work)
                data = _read_regular(name, dirfd, limits.file_bytes)
                if data is None or given.get(rel) == data:
                    continue
                if len(data) > limits.file_bytes:
                    truncated = True
                    continue
                if len(found) >= limits.max_files or total + len(data) > limits.disk_bytes:
                    return found, True
                found[rel] = data
                total += len(data)
        return found, truncated

    def remove(self) -> None:
        if not drop_to_nobody():  # the code may have left dirs we cannot enter: reopen them
            for _root, dirnames, _files, dirfd in os.fwalk(self.base, follow_symlinks=False):
                for name in dirnames:  # the sandbox is gone: nothing swaps these now
                    if stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                        os.chmod(name, 0o700, dir_fd=dirfd)
        shutil.rmtree(self.base, ignore_errors=True)


def _read_regular(name: str, dirfd: int, cap: int) -> bytes | None:
    """The file's bytes (at most ``cap`` + 1) if it is a regular file, else None."""
    try:
        fd = os.open(name, _READ, dir_fd=dirfd)
    except OSError:  # a symlink (ELOOP), gone, or unreadable
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sweep_stale() -> int:
    """Remove run dirs left by processes that died mid-run (killed, say); returns how many."""
    removed = 0
    top = tempfile.gettempdir()
    for entry in os.scandir(top):
        pid = entry.name.removeprefix(PREFIX).partition("-")[0]
        if entry.name.startswith(PREFIX) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
