"""The sandbox's one error: it cannot start here, so the code was not run."""

from __future__ import annotations

from ...errors import MainspringError


class SandboxUnavailableError(MainspringError):
    """The sandbox cannot start on this machine; the code was not run, sandboxed or not.

    There is no fallback to running code unsandboxed: install bubblewrap
    (``apt-get install bubblewrap``) and allow unprivileged user namespaces
    (``sysctl kernel.unprivileged_userns_clone=1`` on older Debian kernels,
    ``kernel.apparmor_restrict_unprivileged_userns=0`` on Ubuntu 24.04+).
    """

    def __init__(self, why: str) -> None:
        super().__init__(
            f"the sandbox cannot start here: {why}; install bubblewrap "
            "(apt-get install bubblewrap) and enable unprivileged user namespaces "
            "(kernel.unprivileged_userns_clone=1, or on Ubuntu "
            "kernel.apparmor_restrict_unprivileged_userns=0); the code was not run"
        )
        self.why = why
