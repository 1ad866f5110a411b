"""Item stores by URL: embedded SQLite (the default) or PostgreSQL shared by many workers."""

from __future__ import annotations

import importlib

from .protocols import ItemStore


async def open_item_store(url: str) -> ItemStore:
    """``"sqlite:///path"``, a plain path, ``":memory:"``, or ``"postgresql://..."``."""
    if not isinstance(url, str) or not url:
        raise ValueError("give a store URL: 'sqlite:///path', ':memory:' or 'postgresql://...'")
    if url.startswith(("postgresql://", "postgres://")):
        # Imported only when asked for: it needs asyncpg.
        postgres = importlib.import_module(".postgres", __package__)
        store: ItemStore = await postgres.PostgresItemStore.open(url)
        return store
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
    elif "://" in url:
        raise ValueError(f"unknown semantic memory URL {url!r}: use sqlite:/// or postgresql://")
    else:
        path = url
    from .sqlite import SQLiteItemStore

    return await SQLiteItemStore.open(path)
