"""Run untrusted Python or shell code in a bubblewrap sandbox (see ``_bwrap`` for what it sees).

``await Sandbox().run_python("print(1)")`` -> ``SandboxResult(stdout="1\\n", ...)``.
A Sandbox checks once, for real, that bubblewrap can make a sandbox here (the
check is cached per bwrap and python); when it cannot, every call raises
:class:`SandboxUnavailableError` and nothing is run: there is no unsandboxed fallback.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import anyio

import mainspring.tools.sandbox._bwrap as _bwrap

from ._process import run_process
from ._workdir import RunDirs, sweep_stale
from .errors import SandboxUnavailableError
from .limits import SandboxLimits, SandboxResult

# ``python -I`` ignores the environment and user site; the working dir goes first on
# sys.path so that given modules import; the program file keeps its tracebacks readable.
_PY_BOOT = (
    "import sys;sys.path.insert(0,{workdir!r});sys.argv=[{path!r}];del sys;"
    "__file__={path!r};exec(compile(open(__file__,'rb').read(),__file__,'exec'))"
)


@functools.cache
def _sweep_once() -> None:
    sweep_stale()  # once per process: dirs of runs whose process was killed


class Sandbox:
    """Runs code isolated: no network, no host files, a private working dir, hard limits.

    ``python`` is the interpreter the code runs on (default: the system's Python under
    /usr; one elsewhere has its prefix bound read-only); ``python_flags`` are passed to
    it (``-S`` skips site-packages and saves a few ms of start-up). ``bwrap`` is the
    bubblewrap binary (default: found on PATH).
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        python: str | None = None,
        python_flags: tuple[str, ...] = ("-I", "-B"),
        bwrap: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.python = python or _bwrap.default_python()
        self.python_flags = python_flags
        self._bwrap_path = bwrap
        self._bwrap: str | None = None

    @staticmethod
    def available(*, bwrap: str | None = None, python: str | None = None) -> str | None:
        """None if a sandbox can start here, else why not (runs bwrap once, then cached)."""
        return _bwrap.unavailable(bwrap, python or _bwrap.default_python())

    async def run_python(
        self, code: str, *, files: Mapping[str, bytes] | None = None, stdin: str = ""
    ) -> SandboxResult:
        """Run ``code`` as a Python program in the working dir with ``files`` in it."""
        path = f"{_bwrap.PROGRAM_DIR}/main.py"
        boot = _PY_BOOT.format(workdir=_bwrap.WORKDIR, path=path)
        argv = [self.python, *self.python_flags, "-c", boot]
        return await self._run(argv, "main.py", code, files or {}, stdin)

    async def run_shell(
        self, command: str, *, files: Mapping[str, bytes] | None = None, stdin: str = ""
    ) -> SandboxResult:
        """Run ``command`` with ``/bin/sh`` in the working dir with ``files`` in it."""
        argv = ["/bin/sh", f"{_bwrap.PROGRAM_DIR}/main.sh"]
        return await self._run(argv, "main.sh", command, files or {}, stdin)

    async def _ready(self) -> str:
        if self._bwrap is None:
            why = await anyio.to_thread.run_sync(_bwrap.unavailable, self._bwrap_path, self.python)
            if why is not None:
                raise SandboxUnavailableError(why)
            found = _bwrap.find_bwrap(self._bwrap_path)
            assert found is not None
            await anyio.to_thread.run_sync(_sweep_once)
            self._bwrap = found
        return self._bwrap

    async def _run(
        self, program: list[str], name: str, code: str, files: Mapping[str, bytes], stdin: str
    ) -> SandboxResult:
        bwrap = await self._ready()
        given = dict(files)
        dirs = await anyio.to_thread.run_sync(RunDirs.create, given, name, code.encode())
        try:
            binds = _bwrap.run_binds(dirs.work, dirs.tmp, dirs.program)
            argv = _bwrap.command(bwrap, self.limits, python=self.python, binds=binds)
            outcome = await run_process(
                argv + program,
                stdin=stdin.encode(),
                limits=self.limits,
                dirs=dirs,
                spawn=_bwrap.spawn_options(),
            )
            produced, cut = await anyio.to_thread.run_sync(dirs.produced, given, self.limits)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(dirs.remove)
        return SandboxResult(
            stdout=outcome.stdout.decode(errors="replace"),
            stderr=outcome.stderr.decode(errors="replace"),
            exit_code=outcome.exit_code,
            timed_out=outcome.killed_reason == "wall timeout",
            killed_reason=outcome.killed_reason,
            files=produced,
            duration=outcome.duration,
            truncated=outcome.truncated or cut,
        )
