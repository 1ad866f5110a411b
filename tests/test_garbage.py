"""Runs leave no cyclic garbage: memory is freed by reference counting alone.

Cyclic garbage per step made W1's timings swing with the cyclic collector (7.5 us
per step without it, 27-38 us in some batches with it). Each run below is counted
with the collector saving what it finds instead of freeing it.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mainspring import Runtime, Store

from .engine_graphs import fanout, support

pytestmark = pytest.mark.anyio


@contextmanager
def cyclic_garbage() -> Iterator[list[Any]]:
    """The objects the cyclic collector found unreachable inside the block."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _no_garbage(one_run: Callable[[int], Awaitable[object]]) -> None:
    for i in range(3):  # warm-up: caches, first-use imports, lazily built decoders
        await one_run(i)
    with cyclic_garbage() as found:
        for i in range(3, 23):
            await one_run(i)
    kinds = sorted({type(obj).__qualname__ for obj in found})
    assert not found, f"{len(found)} objects in reference cycles after 20 runs: {kinds[:12]}"


async def test_a_run_with_effects_and_a_branch_leaves_no_cyclic_garbage(store: Store) -> None:
    async with Runtime(store) as rt:

        async def one_run(i: int) -> object:
            return await rt.run(support, {"text": f"small refund {i}"})

        await _no_garbage(one_run)


async def test_a_fanout_run_leaves_no_cyclic_garbage(store: Store) -> None:
    async with Runtime(store) as rt:

        async def one_run(i: int) -> object:
            return await rt.run(fanout, {"n": 3})

        await _no_garbage(one_run)


@pytest.mark.parametrize("durability", ["sync", "off"])
async def test_a_run_parked_and_resumed_leaves_no_cyclic_garbage(
    tmp_path: Path, durability: str
) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 'g.db'}?create=true") as rt:

        async def one_run(i: int) -> object:
            handle = await rt.start(support, {"text": f"big refund {i}"}, durability=durability)
            parked = await handle.wait()
            assert parked.status.value == "interrupted"
            resumed = await rt.resume(handle.run_id, True)
            return await resumed.result()

        await _no_garbage(one_run)
