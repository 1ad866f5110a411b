"""Citations: where a remembered passage came from, as one short line."""

from __future__ import annotations

from typing import Any

from ..semantic.items import Hit, MemoryItem, Source


def cite(hit: Hit | MemoryItem | Source) -> str:
    """``Title, "Install > Linux", p. 3 (guide.pdf#2)``: the document's title (or its id),
    the heading path and page where known, then the document id and chunk index.
    An item without a source is cited by its id."""
    if isinstance(hit, Hit):
        hit = hit.item
    if isinstance(hit, MemoryItem):
        if hit.source is None:
            return f"memory {hit.id}"
        return format_source(hit.source, hit.metadata)
    return format_source(hit, {})


def format_source(source: Source, metadata: dict[str, Any]) -> str:
    parts = [source.title or source.document]
    if source.heading:
        parts.append(f'"{source.heading}"')
    page = metadata.get("page")
    if page is not None:
        parts.append(f"p. {page}")
    where = source.document if source.chunk is None else f"{source.document}#{source.chunk}"
    text = ", ".join(parts)
    return text if where == parts[0] else f"{text} ({where})"
