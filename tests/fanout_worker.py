"""Another process driving a run, for the fan-out tests and benchmark:
``python -m tests.fanout_worker URL FANOUT RUN_ID STEPS``.

Opens a Runtime on the store URL with ``fanout=FANOUT`` (``pg``, a Redis URL, ``off``),
starts the ``stepper`` run RUN_ID and prints ``ready`` once it exists; then each line
read on stdin lets one step of the run go (so the test decides when each commit
happens). After each commit it prints ``committed <last_seq> <monotonic time>``; at
the end, ``done``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph, Runtime
from mainspring.events import Event
from mainspring.status import RunStatus


class Steps(TypedDict, total=False):
    n: int
    steps: int


STEP = anyio.Semaphore(0)  # released once per line read on stdin


def build_stepper() -> Graph[Steps]:
    g = Graph(Steps, name="stepper")

    @g.node
    async def step(s: Steps, ctx: Context) -> dict[str, Any]:
        await STEP.acquire()
        return {"n": s.get("n", 0) + 1}

    g.edge(START, "step")
    g.branch(
        "step", lambda s: "step" if s.get("n", 0) < s["steps"] else END, {"step": "step", END: END}
    )
    return g


stepper = build_stepper().compile()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def committed(run_id: str, events: Sequence[Event], status: RunStatus | None) -> None:
    if events:  # the moment the store had them (the benchmark's start of delivery)
        say(f"committed {events[-1].seq} {time.monotonic():.6f}")


async def feed_steps() -> None:
    while await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
        STEP.release()


async def main(url: str, fanout: str, run_id: str, steps: int) -> None:
    async with Runtime.open(url, fanout=fanout, recover="off", graphs=[stepper]) as rt:
        rt.services.committed.append(committed)
        run = await rt.start(stepper, {"steps": steps}, run_id=run_id)
        say("ready")
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed_steps)
            await run.wait()
            tg.cancel_scope.cancel()
    say("done")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
