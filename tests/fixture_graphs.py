"""Graphs of the committed store fixtures (``tests/fixtures``): never change their shape.

The fixture files were written by an earlier release running these graphs; the
migration tests open them with today's code and resume the runs they hold.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from mainspring import END, START, Context, Graph, append


class Order(TypedDict, total=False):
    item: str
    qty: int
    price: int
    approved: bool
    log: Annotated[list[str], append]


def _price(item: str, qty: int) -> int:
    return len(item) * 10 * qty


g = Graph(Order, name="fixture-order")


@g.node
async def quote(s: Order, ctx: Context) -> dict[str, Any]:
    price = await ctx.step("pricing.quote", _price, s["item"], s["qty"])
    ctx.emit({"quoted": price})
    return {"price": price, "log": [f"quoted {price}"]}


@g.node
async def approve(s: Order, ctx: Context) -> dict[str, Any]:
    approved = True
    if s["price"] > 100:
        approved = bool(await ctx.interrupt({"approve": s["price"]}))
    return {"approved": approved, "log": ["approved" if approved else "denied"]}


@g.node
def ship(s: Order) -> dict[str, Any]:
    if s["item"] == "explode":
        raise ValueError("cannot ship explosives")
    return {"log": ["shipped" if s.get("approved") else "not shipped"]}


g.edge(START, "quote")
g.edge("quote", "approve")
g.edge("approve", "ship")
g.edge("ship", END)
order = g.compile(ref="tests.fixture_graphs:order")
