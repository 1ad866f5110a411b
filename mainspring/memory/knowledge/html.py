"""HTML (by selectolax, on the Lexbor engine) into blocks: headings kept as the path,
scripts, styles, navigation, headers, footers and forms dropped."""

from __future__ import annotations

import re
from typing import Final

from selectolax.lexbor import LexborHTMLParser, LexborNode

from .blocks import Joiner, Parsed

_DROP: Final = "script, style, noscript, template, nav, header, footer, aside, form, svg, iframe"
_HEADINGS: Final = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PROSE: Final = {"p", "blockquote", "dt", "dd", "figcaption", "caption", "address"}
_LIST_ITEM: Final = "li"
_PRE: Final = "pre"
_TABLE: Final = "table"
_BEFORE_PUNCTUATION: Final = re.compile(r" ([.,;:!?)\]])")


def parse_html(source: str) -> Parsed:
    tree = LexborHTMLParser(source)
    for node in tree.css(_DROP):
        node.decompose()
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else None
    walker = _Walker()
    root = tree.body or tree.root
    if root is not None:
        walker.walk(root)
    walker.flush()
    if not title:
        first = next((b for b in walker.out.blocks if b.heading), None)
        title = first.heading[0] if first is not None else None
    return walker.out.parsed(title or None)


class _Walker:
    def __init__(self) -> None:
        self.out = Joiner()
        self.path: list[tuple[int, str]] = []
        self.loose: list[str] = []  # text directly inside containers (a div's bare text)

    @property
    def heading(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.path)

    def flush(self) -> None:
        text = " ".join(" ".join(self.loose).split())
        self.loose.clear()
        self.out.add(text, self.heading)

    def walk(self, node: LexborNode) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                if (child.text_content or "").strip():
                    self.loose.append(child.text_content or "")
                continue
            if tag in _HEADINGS:
                self.flush()
                level, text = _HEADINGS[tag], _text(child)
                while self.path and self.path[-1][0] >= level:
                    self.path.pop()
                if text:
                    self.path.append((level, text))
                    self.out.add(text, self.heading, title=True)
            elif tag in _PROSE or tag == _LIST_ITEM:
                self.flush()
                text = _text(child)
                self.out.add(f"- {text}" if tag == _LIST_ITEM else text, self.heading)
            elif tag == _PRE:
                self.flush()
                self.out.add(child.text(deep=True), self.heading, split="lines", atomic=True)
            elif tag == _TABLE:
                self.flush()
                self.out.add(_table(child), self.heading, split="lines", atomic=True)
            elif tag == "br":
                self.loose.append("\n")
            else:  # a container (div, section, article, ul, ...) or inline markup
                self.walk(child)
                if tag in ("div", "section", "article", "main", "ul", "ol", "dl"):
                    self.flush()


def _text(node: LexborNode) -> str:
    """The node's text, words joined by single spaces (a separator between inline
    elements keeps "<b>a</b><i>b</i>" two words; none goes before punctuation)."""
    text = " ".join(node.text(deep=True, separator=" ").split())
    return _BEFORE_PUNCTUATION.sub(r"\1", text)


def _table(node: LexborNode) -> str:
    rows = []
    for row in node.css("tr"):
        cells = [_text(cell) for cell in row.iter() if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
