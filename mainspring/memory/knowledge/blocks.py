"""What every parser gives the chunker: the document's text and its blocks in order.

A block is a span of that text (a heading line, a paragraph, a list, a code block, a
table) with the path of headings it sits under and, for a PDF, its page. Chunks are
made of whole blocks where they fit, so they keep the document's structure.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

Kind: TypeAlias = Literal["text", "markdown", "html", "pdf"]
# How a block too long for one chunk is split: prose by sentences; lines (code, tables,
# lists) by lines. ``atomic`` blocks (code, tables) are never split when they fit.
Split: TypeAlias = Literal["prose", "lines"]


class Block(msgspec.Struct, frozen=True):
    start: int  # character offsets into Parsed.text
    end: int
    heading: tuple[str, ...] = ()
    page: int | None = None  # 1-based, for PDFs
    split: Split = "prose"
    atomic: bool = False
    title: bool = False  # a heading's own line


class Parsed(msgspec.Struct):
    text: str
    blocks: list[Block]
    title: str | None = None


class Joiner:
    """Builds a document text from extracted pieces (HTML, PDF), each piece a block."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.length = 0

    def add(
        self, text: str, heading: tuple[str, ...], *, page: int | None = None,
        split: Split = "prose", atomic: bool = False, title: bool = False,
    ) -> None:  # fmt: skip
        text = text.strip()
        if not text:
            return
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        self.parts.append(text)
        self.blocks.append(
            Block(self.length, self.length + len(text), heading, page, split, atomic)
        )
        self.length += len(text)

    def parsed(self, title: str | None) -> Parsed:
        return Parsed("".join(self.parts), self.blocks, title)
