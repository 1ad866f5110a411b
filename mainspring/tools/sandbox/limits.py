"""What a sandboxed run may use, and what it gives back: plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    ``cpu_seconds``, ``memory_mb`` (address space), ``file_bytes`` (the largest file
    the code may write) and ``processes`` are kernel rlimits of every process in the
    sandbox (``processes`` counts per sandbox: each has its own user namespace).
    ``wall_seconds`` kills the whole sandbox; so does output past ``output_bytes`` on
    stdout or stderr (each), and a working dir and ``/tmp`` holding more than
    ``disk_bytes`` or ``max_entries`` files (checked every ``disk_check_seconds``).
    At most ``max_files`` produced files come back, ``file_bytes`` each.
    """

    cpu_seconds: int = 10
    memory_mb: int = 256
    processes: int = 64
    output_bytes: int = 1_000_000
    wall_seconds: float = 30.0
    file_bytes: int = 10_000_000
    disk_bytes: int = 50_000_000
    max_entries: int = 10_000
    max_files: int = 100
    disk_check_seconds: float = 0.2

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"SandboxLimits.{name} must be positive, got {getattr(self, name)}"
                )


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a sandboxed run gave back.

    ``exit_code`` is the program's status, or 128 + the signal that ended it (the
    shell's convention). ``killed_reason`` says why the sandbox stopped it, if it did:
    ``"wall timeout"``, ``"cpu limit"``, ``"output limit"``, ``"disk limit"`` or
    ``"file size limit"``. ``files`` holds the regular files the code created or
    changed in its working dir (never through a symlink); ``truncated`` is True when
    output or files were cut to the limits.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    killed_reason: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    duration: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None
