"""A shared value and its version: what compare-and-set reads and writes (its own module,
so the memory errors can name it without importing the session protocol)."""

from __future__ import annotations

from typing import Any

import msgspec


class Versioned(msgspec.Struct, frozen=True):
    """A shared value and its version (1 on the first write, +1 on each later one)."""

    value: Any
    version: int
