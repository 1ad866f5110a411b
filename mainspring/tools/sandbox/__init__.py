"""Sandboxed code execution: untrusted Python and shell code run isolated with bubblewrap.

``Sandbox().run_python(code, files=..., stdin=...)`` and ``run_shell(command, ...)``
return a :class:`SandboxResult`; :class:`SandboxLimits` bounds CPU, memory,
processes, output, files and wall time. When the sandbox cannot start here the call
raises :class:`SandboxUnavailableError`; code is never run unsandboxed.
"""

from __future__ import annotations

from .errors import SandboxUnavailableError
from .limits import SandboxLimits, SandboxResult
from .sandbox import Sandbox
from .tools import sandbox_tools

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "SandboxUnavailableError", "sandbox_tools"]
