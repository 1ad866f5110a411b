"""Chunks that respect structure: sections, then blocks, then sentences or lines, under
a token cap, with overlap between neighbouring chunks of a section.

A chunk never spans two sections (its heading path is exact for citations), except
that a section of nothing but its heading (followed at once by a sub-heading) joins
the next one. Within a section, whole blocks are packed while they fit; a block
longer than the cap is cut into sentences (prose) or lines (code, tables, lists), and
a sentence or line still too long into pieces at spaces. A code block or table that
fits is never cut, and a chunk that would end inside a block ends at the last block
boundary instead when that keeps at least half of it. Each chunk after the first of a
section begins with the last units (sentences, lines) of the one before, up to
``overlap`` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import msgspec

from .blocks import Block, Parsed

_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+[\"')\]]*(?=\s|\Z)|\n|\Z)\s*")
_LINE = re.compile(r"[^\n]*(?:\n|\Z)")


class Chunk(msgspec.Struct, frozen=True):
    index: int
    text: str
    start: int  # offsets into the parsed text
    end: int
    heading: tuple[str, ...]
    page: int | None = None
    page_end: int | None = None


class _Unit(msgspec.Struct):
    start: int
    end: int
    tokens: int
    page: int | None
    block_end: bool  # the last unit of its block: a good place to end a chunk


def chunk(
    parsed: Parsed, count: Callable[[str], int], *, max_tokens: int, overlap: int
) -> list[Chunk]:
    if max_tokens < 8:
        raise ValueError(f"chunk_tokens must be at least 8, not {max_tokens}")
    if not 0 <= overlap < max_tokens // 2 + 1:
        raise ValueError(f"overlap must be 0 to half of chunk_tokens ({max_tokens}), not {overlap}")
    text = parsed.text
    out: list[Chunk] = []
    carried: list[_Unit] = []
    sections = list(_sections(parsed.blocks))
    for n, (heading, blocks) in enumerate(sections):
        units = carried + [u for b in blocks for u in _units(text, b, count, max_tokens)]
        if n + 1 < len(sections) and all(b.title for b in blocks):
            carried = units  # a bare heading: the next section starts with it
            continue
        carried = []
        for group in _pack(units, max_tokens, overlap, count, text):
            start, end = group[0].start, group[-1].end
            pages = [u.page for u in group if u.page is not None]
            out.append(Chunk(
                len(out), text[start:end], start, end, heading,
                pages[0] if pages else None, pages[-1] if pages else None,
            ))  # fmt: skip
    return out


def _sections(blocks: list[Block]) -> Iterator[tuple[tuple[str, ...], list[Block]]]:
    current: list[Block] = []
    for block in blocks:
        if current and block.heading != current[0].heading:
            yield current[0].heading, current
            current = []
        current.append(block)
    if current:
        yield current[0].heading, current


def _units(text: str, block: Block, count: Callable[[str], int], cap: int) -> list[_Unit]:
    """The block whole when it fits, else its sentences or lines (pieces of those at
    spaces when still too long)."""
    tokens = count(text[block.start : block.end])
    if tokens <= cap:
        return [_Unit(block.start, block.end, tokens, block.page, True)]
    pattern = _LINE if block.split == "lines" else _SENTENCE
    units: list[_Unit] = []
    for m in pattern.finditer(text, block.start, block.end):
        start, end = m.start(), min(m.end(), block.end)
        while start < end and text[end - 1].isspace():
            end -= 1
        if start >= end:
            continue
        n = count(text[start:end])
        if n <= cap:
            units.append(_Unit(start, end, n, block.page, False))
        else:
            units.extend(_pieces(text, start, end, n, count, cap, block.page))
    if units:
        units[-1].block_end = True
    return units


def _pieces(
    text: str, start: int, end: int, tokens: int, count: Callable[[str], int], cap: int,
    page: int | None,
) -> list[_Unit]:  # fmt: skip
    """A span too long for a chunk, cut at spaces into pieces of at most ``cap`` tokens."""
    out: list[_Unit] = []
    while start < end:
        n = count(text[start:end])
        if n <= cap:
            out.append(_Unit(start, end, n, page, False))
            break
        cut = start + max(1, (end - start) * cap // n)
        while True:
            space = text.rfind(" ", start + 1, cut)
            stop = space if space > start else cut
            m = count(text[start:stop])
            if m <= cap or stop - start <= 1:
                break
            cut = start + max(1, (stop - start) * cap // m - 1)
        out.append(_Unit(start, stop, m, page, False))
        start = stop
        while start < end and text[start].isspace():
            start += 1
    return out


def _pack(
    units: list[_Unit], cap: int, overlap: int, count: Callable[[str], int], text: str
) -> Iterator[list[_Unit]]:
    """Groups of consecutive units of at most ``cap`` tokens, overlapping by up to
    ``overlap`` tokens of whole units; every group has at least one unit the previous
    one did not."""
    n = len(units)
    first = fresh = 0  # the group's first unit, and its first unit not in the last group
    while fresh < n:
        group = units[first : fresh + 1]
        total = sum(u.tokens + 1 for u in group)
        i = fresh + 1
        while i < n and total + units[i].tokens + 1 <= cap:
            group.append(units[i])
            total += units[i].tokens + 1
            i += 1
        keep = fresh - first + 1  # never fewer units than this: the group must advance
        if i < n and not group[-1].block_end:  # it would end inside a block
            ends = [k for k, u in enumerate(group) if u.block_end and k + 1 >= keep]
            if ends and sum(u.tokens for u in group[: ends[-1] + 1]) * 2 >= total:
                group = group[: ends[-1] + 1]
        while len(group) > keep and count(text[group[0].start : group[-1].end]) > cap:
            group.pop()  # joined texts can count more than their parts
        if len(group) == keep and keep > 1 and count(text[group[0].start : group[-1].end]) > cap:
            group = group[keep - 1 :]  # the overlap does not fit beside the new unit
        yield group
        end = units.index(group[-1], fresh) + 1
        if end >= n:
            return
        first, fresh = _overlap_start(units, end, overlap, cap), end


def _overlap_start(units: list[_Unit], following: int, overlap: int, cap: int) -> int:
    """Where the next group starts: back from ``following`` by whole units of at most
    ``overlap`` tokens in all, leaving room for the unit at ``following``."""
    start, total = following, 0
    room = cap - units[following].tokens - 1
    while start > 0:
        tokens = units[start - 1].tokens + 1
        if total + tokens > min(overlap, room):
            break
        total += tokens
        start -= 1
    return start
