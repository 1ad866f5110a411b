"""A toolbox served over MCP by tests/test_mcp_server.py (``module:toolbox``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from mainspring.tools import Toolbox, tool


class Order(BaseModel):
    id: str
    amount: float
    status: Literal["open", "shipped"]


@tool
async def lookup_order(order_id: str, include_items: bool = False) -> Order:
    """Find an order by its id.

    Args:
        order_id: The order's id, like A-17.
        include_items: Whether to list the items too.
    """
    return Order(id=order_id, amount=120.0, status="open")


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


@tool
async def boom() -> str:
    """Always fails."""
    raise ValueError("the warehouse is on fire")


toolbox = Toolbox([lookup_order, shout, boom])
