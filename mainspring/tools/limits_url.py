"""A limits backend named by URL (``mainspring tools --limits redis://...``)."""

from __future__ import annotations

from .limits import LimitsBackend, MemoryLimits


def open_limits(url: str | None) -> LimitsBackend:
    """A backend from a URL: ``memory://`` (or None), ``redis://...``, ``postgresql://...``."""
    if url is None or url in ("", "memory", "memory://"):
        return MemoryLimits()
    scheme = url.partition(":")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from .limits_redis import RedisLimits

        return RedisLimits(url)
    if scheme in ("postgres", "postgresql"):
        from .limits_postgres import PostgresLimits

        return PostgresLimits(url)
    raise ValueError(
        f"limits URL {url!r}: use memory://, redis://host:port/db or postgresql://... "
        "(?schema=name)"
    )
