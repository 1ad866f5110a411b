"""Scale-out on PostgreSQL: runs started into a queue, driven by `mainspring worker` processes.

    export MAINSPRING_STORE='postgresql://postgres@127.0.0.1:5432/test?schema=demo'
    mainspring worker --queue default --graph examples.queue_demo:app &    # one or more
    python examples/queue_demo.py --runs 20                                # enqueue, wait

Each run enriches a support ticket in three durable steps (classify, look up the
customer, draft a reply); every step is a journaled effect, so a worker killed mid-run
(try `kill -9` on one) has its runs taken over by another once their leases expire
(`--lease-ttl`, default 30 s), and no finished step runs again. `mainspring queue` shows
the queue's depth and the workers with their leases while it runs.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Annotated, Any, TypedDict

import anyio

from mainspring import END, START, Context, Graph, Runtime, append


class Ticket(TypedDict, total=False):
    id: int
    text: str
    steps: Annotated[list[str], append]


def _classify(text: str) -> str:
    return "refund" if "refund" in text.lower() else "question"


def _customer(ticket_id: int) -> dict[str, Any]:
    return {"id": 1000 + ticket_id, "tier": "gold" if ticket_id % 3 == 0 else "standard"}


async def classify(t: Ticket, ctx: Context) -> dict[str, Any]:
    kind = await ctx.step("classify", _classify, t["text"])
    return {"steps": [f"classified: {kind} (worker pid {os.getpid()})"]}


async def lookup(t: Ticket, ctx: Context) -> dict[str, Any]:
    customer = await ctx.step("lookup", _customer, t["id"])
    return {"steps": [f"customer {customer['id']} ({customer['tier']})"]}


async def draft(t: Ticket, ctx: Context) -> dict[str, Any]:
    reply = await ctx.step("draft", lambda: f"Dear customer, about ticket {t['id']}: on it.")
    return {"steps": [reply]}


g = Graph(Ticket, name="queue-demo")
g.node(classify)
g.node(lookup)
g.node(draft)
g.edge(START, "classify")
g.edge("classify", "lookup")
g.edge("lookup", "draft")
g.edge("draft", END)
app = g.compile()


async def main(store: str, runs: int, queue: str) -> None:
    async with Runtime.open(store) as rt:
        began = time.perf_counter()
        handles = [
            await rt.start(
                app,
                {"id": i, "text": "I want a refund" if i % 2 else "Where is my parcel?"},
                queue=queue,
                metadata={"tenant": f"shop-{i % 3}"},
            )
            for i in range(runs)
        ]
        print(f"enqueued {runs} runs in queue {queue!r}; waiting for the workers...")
        for handle in handles:
            outcome = await handle.wait()
            print(f"{handle.run_id[:8]} {outcome.status.value}: {outcome.state['steps'][0]}")
        print(f"{runs} runs done in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=os.environ.get("MAINSPRING_STORE", ""))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--queue", default="default")
    args = parser.parse_args()
    if not args.store.startswith("postgresql://"):
        parser.error("give --store postgresql://... (or set MAINSPRING_STORE): queues live there")
    anyio.run(main, args.store, args.runs, args.queue)
