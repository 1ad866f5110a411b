"""Plain text: paragraphs, separated by blank lines."""

from __future__ import annotations

import re

from .blocks import Block, Parsed

_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\n[ \t]*\n|\s*\Z)", re.DOTALL)


def parse_text(source: str) -> Parsed:
    blocks = [Block(m.start(), m.end()) for m in _PARAGRAPH.finditer(source)]
    return Parsed(source, blocks, None)
