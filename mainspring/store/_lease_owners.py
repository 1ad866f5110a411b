"""Lease owners: who drives a run, and whether a local owner is known to be dead."""

from __future__ import annotations

import os
import socket
import uuid

_HOST = socket.gethostname()


def new_owner_id() -> str:
    """A unique owner id for one runtime: ``host:pid:token``."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str | None) -> bool:
    """True if ``owner`` is a process on this host that no longer exists.

    Lets a restarted embedded process recover its crashed runs at once instead
    of waiting for their leases to expire. Owners on other hosts are never
    declared dead here; their leases expire instead.
    """
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
