"""Cursors (how far a reader of the journal got in each run), checked on every backend.

Written against the Cursors protocol (``save_cursors`` / ``load_cursors``) only, which
every store implements; ``conftest.store`` gives each test a fresh, open store of each backend.
"""

from __future__ import annotations

import anyio
import pytest

from mainspring.store import Cursors, Store
from tests.conftest import needs

pytestmark = [pytest.mark.anyio, needs(Cursors)]


async def test_cursors_start_absent(store: Store) -> None:
    assert await store.load_cursors("otel-spans", ["a", "b"]) == {}
    assert await store.load_cursors("otel-spans", []) == {}


async def test_saved_cursors_load_back_per_name(store: Store) -> None:
    await store.save_cursors("otel-spans", {"a": 3, "b": 7})
    await store.save_cursors("other", {"a": 100})
    assert await store.load_cursors("otel-spans", ["a", "b", "c"]) == {"a": 3, "b": 7}
    assert await store.load_cursors("other", ["a", "b"]) == {"a": 100}
    assert await store.load_cursors("nobody", ["a"]) == {}


async def test_a_cursor_is_raised_never_lowered(store: Store) -> None:
    await store.save_cursors("r", {"a": 5, "b": 5})
    await store.save_cursors("r", {"a": 9, "b": 2})  # b: a late save of older progress
    assert await store.load_cursors("r", ["a", "b"]) == {"a": 9, "b": 5}
    await store.save_cursors("r", {"a": 9})  # the same again: harmless
    await store.save_cursors("r", {})
    assert await store.load_cursors("r", ["a", "b"]) == {"a": 9, "b": 5}


async def test_many_runs_in_one_call(store: Store) -> None:
    cursors = {f"run-{i:05d}": i for i in range(1500)}  # beyond SQLite's parameter chunks
    await store.save_cursors("r", cursors)
    wanted = [*cursors, "missing"]
    assert await store.load_cursors("r", wanted) == cursors


async def test_concurrent_saves_keep_the_highest(store: Store) -> None:
    async with anyio.create_task_group() as tg:
        for seq in range(1, 21):
            tg.start_soon(store.save_cursors, "r", {"a": seq, f"only-{seq}": seq})
    loaded = await store.load_cursors("r", ["a", *(f"only-{s}" for s in range(1, 21))])
    assert loaded["a"] == 20
    assert all(loaded[f"only-{s}"] == s for s in range(1, 21))
