"""Markdown (CommonMark plus tables, by markdown-it-py) into blocks under heading paths.

Offsets point into the Markdown source itself, so a chunk is the source's own text
(code fences and table syntax included) and a citation's offsets open the file there.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

from .blocks import Block, Parsed, Split

_ATOMIC = {"fence", "code_block", "table_open"}
_LINES = {"bullet_list_open", "ordered_list_open", "html_block"}


def parse_markdown(source: str) -> Parsed:
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(source)
    starts = _line_starts(source)
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    title = None
    for n, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        start, end = starts[token.map[0]], starts[token.map[1]]
        if token.type == "heading_open":
            level, text = int(token.tag[1]), tokens[n + 1].content.strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, text))
            if title is None and level == 1:
                title = text
        span = source[start:end].rstrip()
        if not span.strip():
            continue
        heading = tuple(t for _, t in path)
        if token.type in _ATOMIC:
            blocks.append(Block(start, start + len(span), heading, split="lines", atomic=True))
        else:
            split: Split = "lines" if token.type in _LINES else "prose"
            title_line = token.type == "heading_open"
            blocks.append(Block(start, start + len(span), heading, split=split, title=title_line))
    return Parsed(source, blocks, title)


def _line_starts(source: str) -> list[int]:
    """The offset of each line's start, and one past the end (markdown-it maps lines)."""
    starts = [0]
    for n, c in enumerate(source):
        if c == "\n":
            starts.append(n + 1)
    starts.append(len(source))
    return starts
