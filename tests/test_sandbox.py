"""The sandbox's functions: output, exit codes, stdin, files in and out, limits, refusal.

Every test runs code for real in bubblewrap (skipped when it cannot start here, failed
under MAINSPRING_REQUIRE_SERVICES=1). The escape attempts are in test_sandbox_escapes.py.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from mainspring.errors import MainspringError
from mainspring.tools.sandbox import Sandbox, SandboxLimits, SandboxUnavailableError
from tests.sandbox_support import pids_with, require_sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def sandbox() -> Sandbox:
    return require_sandbox()


async def test_stdout_stderr_and_exit_code(sandbox: Sandbox) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    result = await sandbox.run_python(code)
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    assert not result.timed_out and result.killed_reason is None and not result.truncated
    assert not result.ok and 0 < result.duration < 10


async def test_a_python_exception_is_a_traceback_and_exit_1(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("def f():\n    raise ValueError('bad input')\nf()")
    assert result.exit_code == 1 and result.stdout == ""
    assert 'File "/run/program/main.py", line 2, in f' in result.stderr
    assert "raise ValueError('bad input')" in result.stderr  # the source line is shown
    assert result.stderr.rstrip().endswith("ValueError: bad input")


async def test_stdin_reaches_the_program(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("import sys\nprint(sys.stdin.read().upper())", stdin="abc\n")
    assert result.stdout == "ABC\n\n" and result.ok
    shell = await sandbox.run_shell("read a; read b; echo $b $a", stdin="one\ntwo\n")
    assert shell.stdout == "two one\n"


async def test_input_files_are_there_and_produced_files_come_back(sandbox: Sandbox) -> None:
    files = {
        "data/in.csv": b"a,b\n1,2\n",
        "keep.txt": b"same",
        "edit.txt": b"old",
        "lib.py": b"X = 7",
    }
    code = (
        "import csv, os, lib\n"
        "rows = list(csv.reader(open('data/in.csv')))\n"
        "os.makedirs('out/deep')\n"
        "open('out/deep/result.txt', 'w').write(str(len(rows) * lib.X))\n"
        "open('edit.txt', 'w').write('new')\n"
        "open('/tmp/scratch', 'w').write('not returned')\n"
        "print(os.getcwd(), sorted(os.listdir('.')))\n"
    )
    result = await sandbox.run_python(code, files=files)
    assert result.ok, result.stderr
    assert result.stdout == "/sandbox ['data', 'edit.txt', 'keep.txt', 'lib.py', 'out']\n"
    assert result.files == {"out/deep/result.txt": b"14", "edit.txt": b"new"}  # new or changed


async def test_shell_runs_in_the_working_dir_with_a_clean_environment(sandbox: Sandbox) -> None:
    result = await sandbox.run_shell(
        "pwd; id -u; cat in.txt | tr a-z A-Z > out.txt; env | sort | cut -d= -f1 | tr '\\n' ' '",
        files={"in.txt": b"hello"},
    )
    assert result.ok, result.stderr
    pwd, uid, env = result.stdout.splitlines()
    assert (pwd, uid) == ("/sandbox", "65534")
    assert env.split() == sorted(
        ["HOME", "LANG", "PATH", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TMPDIR"]
    )
    assert result.files == {"out.txt": b"HELLO"}


async def test_a_non_zero_shell_exit_and_a_signal(sandbox: Sandbox) -> None:
    assert (await sandbox.run_shell("exit 42")).exit_code == 42
    killed = await sandbox.run_shell("kill -TERM $$")
    assert killed.exit_code == 128 + 15 and killed.killed_reason is None


async def test_given_file_names_cannot_leave_the_working_dir(sandbox: Sandbox) -> None:
    for name in ("../escape", "/etc/passwd", "a/../../b", "", "./x", "a//b"):
        with pytest.raises(ValueError, match="relative path"):
            await sandbox.run_python("print(1)", files={name: b"x"})


async def test_runs_are_concurrent_and_independent(sandbox: Sandbox) -> None:
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        code = f"import os, time\nopen('mine', 'w').write('{i}')\ntime.sleep(0.3)\nprint(os.listdir('.'), open('mine').read())"
        results[i] = (await sandbox.run_python(code)).stdout

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    assert results == {i: f"['mine'] {i}\n" for i in range(4)}
    assert time.perf_counter() - started < 4 * 0.3 + 2  # they overlapped


async def test_a_cancelled_call_kills_the_sandbox(sandbox: Sandbox) -> None:
    token = f"{time.time_ns() % 10**6}.{uuid.uuid4().int % 10**6}"
    with anyio.move_on_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sandbox.run_shell, f"sleep {token}")
            with anyio.fail_after(5):
                while not pids_with(f"sleep\0{token}"):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        while pids_with(f"sleep\0{token}"):
            await anyio.sleep(0.05)


async def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="cpu_seconds must be positive"):
        SandboxLimits(cpu_seconds=0)


# --- refusing to start: never a fallback to running unsandboxed -----------------------


async def test_a_missing_bwrap_refuses_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran-unsandboxed"
    box = Sandbox(bwrap=str(tmp_path / "no-such-bwrap"))
    assert "bubblewrap (bwrap) was not found" in (Sandbox.available(bwrap=box._bwrap_path) or "")
    with pytest.raises(SandboxUnavailableError, match="the sandbox cannot start here") as caught:
        await box.run_python(f"open({str(marker)!r}, 'w').write('x')")
    assert isinstance(caught.value, MainspringError)
    assert "install bubblewrap" in str(caught.value) and "user namespaces" in str(caught.value)
    with pytest.raises(SandboxUnavailableError):
        await box.run_shell(f"touch {marker}")
    assert not marker.exists()


async def test_user_namespaces_off_refuses_and_runs_nothing(tmp_path: Path) -> None:
    # A bwrap that fails the way it does when the kernel refuses user namespaces, in a dir
    # that nobody may enter (the probe runs as nobody when we are root).
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o755)
        fake = Path(shared) / "bwrap"
        fake.write_text(
            "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
        )
        fake.chmod(0o755)
        marker = tmp_path / "ran-unsandboxed"
        box = Sandbox(bwrap=str(fake))
        with pytest.raises(SandboxUnavailableError, match="No permissions to creating new"):
            await box.run_shell(f"touch {marker}")
        with pytest.raises(SandboxUnavailableError, match="No permissions to creating new"):
            await box.run_python(f"open({str(marker)!r}, 'w')")
    assert not marker.exists()


async def test_available_says_none_here(sandbox: Sandbox) -> None:
    assert Sandbox.available() is None


async def test_the_python_and_shell_tools_run_through_ctx_tool(tmp_path: Path) -> None:
    """The built-in tools: the model's code runs sandboxed, through the gate and journal."""
    require_sandbox()
    from typing import TypedDict

    from mainspring import END, START, Context, Graph, Runtime
    from mainspring.events import EffectStarted
    from mainspring.tools import Toolbox, sandbox_tools

    class S(TypedDict, total=False):
        out: dict[str, Any]
        sh: dict[str, Any]

    g = Graph(S, name="code")

    @g.node
    async def run(s: S, ctx: Context) -> S:
        code = "import os\nopen('out.txt','w').write(open('in.txt').read().upper())\nprint(2+3)"
        out = await ctx.tool("python", code=code, files={"in.txt": "hello"})
        sh = await ctx.tool("shell", command="ls; echo $HOME")
        return {"out": out, "sh": sh}

    g.edge(START, "run")
    g.edge("run", END)
    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=Toolbox(sandbox_tools())) as rt:
        state = await rt.run(g.compile(), {})
        events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["out"]["stdout"] == "5\n" and state["out"]["exit_code"] == 0
    assert state["out"]["files"] == {"out.txt": "HELLO"}
    assert state["sh"]["stdout"] == "/sandbox\n"  # each call a fresh sandbox: ls finds nothing
    assert [e.data.name for e in events if isinstance(e.data, EffectStarted)] == [
        "tool:python",
        "tool:shell",
    ]
