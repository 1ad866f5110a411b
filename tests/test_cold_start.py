"""Cold start: what a fresh process imports to build a graph and run it on SQLite.

Each test runs a real interpreter, so that nothing this test session imported
hides what ``import mainspring`` pulls in by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# Loaded only when first needed: the sync facade (anyio's thread portal), time travel,
# the memory and PostgreSQL stores, validation, telemetry, the CLI.
NOT_AT_IMPORT = (
    "anyio.from_thread",
    "anyio.streams.memory",
    "mainspring.engine.sync",
    "mainspring.engine.timetravel",
    "mainspring.store.memory",
    "mainspring.store.postgres",
    "mainspring.store.sqlite",
    "mainspring.telemetry",
    "mainspring.cli",
    "mainspring.models",
    "httpx",
    "numpy",
    "redis",
    "pydantic",
    "asyncpg",
    "opentelemetry",
    "typer",
    "difflib",
    "hashlib",
)


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_mainspring_loads_only_what_running_a_graph_needs(tmp_path: Path) -> None:
    loaded = _modules_after("import mainspring", tmp_path)
    assert "mainspring.engine.runtime" in loaded
    assert not loaded & set(NOT_AT_IMPORT), sorted(loaded & set(NOT_AT_IMPORT))


def test_running_a_graph_on_sqlite_loads_no_extras(tmp_path: Path) -> None:
    loaded = _modules_after(
        f"""
        from typing import TypedDict
        import anyio
        from mainspring import END, START, Graph, Runtime

        class S(TypedDict, total=False):
            n: int

        g = Graph(S)
        g.node("a", lambda s: {{"n": s["n"] + 1}})
        g.edge(START, "a")
        g.edge("a", END)
        app = g.compile()

        async def main() -> None:
            async with Runtime.open("sqlite:///{tmp_path / "cold.db"}?create=true") as rt:
                assert await rt.run(app, {{"n": 1}}) == {{"n": 2}}

        anyio.run(main)
        """,
        tmp_path,
    )
    assert "mainspring.store.sqlite" in loaded
    extras = {"mainspring.store.memory", "mainspring.store.postgres", "pydantic", "asyncpg"}
    extras |= {"mainspring.engine.sync", "mainspring.engine.timetravel", "opentelemetry"}
    assert not loaded & extras, sorted(loaded & extras)


def test_lazy_public_names_resolve_to_the_real_objects(tmp_path: Path) -> None:
    import mainspring
    from mainspring.engine.sync import SyncRuntime
    from mainspring.engine.timetravel import StateView
    from mainspring.store.memory import MemoryStore

    assert mainspring.SyncRuntime is SyncRuntime
    assert mainspring.StateView is StateView
    from mainspring import store

    assert store.MemoryStore is MemoryStore
    assert {"SyncRuntime", "StateView", "Runtime"} <= set(dir(mainspring))
    assert "MemoryStore" in dir(store)
    try:
        getattr(mainspring, "NoSuchName")  # noqa: B009
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
