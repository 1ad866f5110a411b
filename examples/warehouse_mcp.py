"""A small warehouse service spoken to over MCP (stdio), for examples/ops_agent.py.

Run as ``python -m mainspring.tools.mcp_server examples.warehouse_mcp:toolbox``: the
agent's process starts it and uses its tools like its own.
"""

from __future__ import annotations

from mainspring.tools import Toolbox, tool

_STOCK = {"KETTLE-2": 14, "MUG-6": 0, "LAMP-1": 3}


@tool
def warehouse_stock(sku: str) -> dict[str, object]:
    """How many units of a product the warehouse holds, and when more arrive.

    Args:
        sku: The product's stock-keeping unit, like KETTLE-2.
    """
    units = _STOCK.get(sku.upper())
    if units is None:
        raise ValueError(f"unknown SKU {sku!r}; known: {', '.join(sorted(_STOCK))}")
    return {"sku": sku.upper(), "units": units, "restock_days": 0 if units else 9}


toolbox = Toolbox([warehouse_stock])
