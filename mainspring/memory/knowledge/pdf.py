"""PDF (by pypdf) into blocks: paragraphs per page, the page number kept for citations,
the document's outline (bookmarks), when it has one, as the heading path."""

from __future__ import annotations

import io
import re
from typing import Any

from .blocks import Joiner, Parsed

_PARAGRAPHS = re.compile(r"\n[ \t]*\n")


def parse_pdf(data: bytes) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise ValueError(f"not a PDF pypdf can read ({exc}); give kind= for other formats") from exc
    outline = _outline(reader)
    joiner = Joiner()
    heading: tuple[str, ...] = ()
    for number, text in enumerate(pages, start=1):
        heading = outline.get(number, heading)
        for paragraph in _PARAGRAPHS.split(text):
            joiner.add(paragraph, heading, page=number)
    title = None
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title).strip() or None
    return joiner.parsed(title)


def _outline(reader: Any) -> dict[int, tuple[str, ...]]:
    """The heading path in force from each page an outline entry points at."""
    found: dict[int, tuple[str, ...]] = {}

    def visit(entries: list[Any], path: tuple[str, ...]) -> None:
        last: tuple[str, ...] = path
        for entry in entries:
            if isinstance(entry, list):
                visit(entry, last)
                continue
            try:
                page = reader.get_destination_page_number(entry) + 1
            except Exception:  # a broken destination: no heading from it
                continue
            last = (*path, str(entry.title))
            found.setdefault(page, last)

    try:
        visit(list(reader.outline), ())
    except Exception:  # outlines are often malformed: the text matters more
        return {}
    return found
