"""Ingesting a document into semantic memory: parse, chunk, write, replace the old chunks.

``await ingest(memory, Path("guide.md"), scope=Scope("acme"))`` reads the document
(text, Markdown, HTML or PDF; sniffed when ``kind`` is None), cuts it into chunks that
respect its structure (:mod:`.chunking`) and adds each as a memory item whose
``source`` says where it came from (document, title, chunk index, offsets, heading
path) and whose metadata holds the page of a PDF. Ingesting the same document (the
same ``document`` id in the same scope) again replaces its chunks: a chunk whose index
and text are unchanged keeps its id and its embedding; the others are forgotten first,
then the new ones written.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from ..context.counting import TokenCounter
from ..scope import Scope
from ..semantic import items as items_module
from ..semantic.items import MemoryItem, Source, WriteResult
from .blocks import Kind, Parsed
from .chunking import Chunk, chunk

CHUNK_TOKENS: Final = 200  # MiniLM, the local embedder, reads 256 of its own tokens
OVERLAP: Final = 30
_KINDS: Final = ("text", "markdown", "html", "pdf")
_SUFFIXES: Final = {
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf", ".txt": "text", ".text": "text", ".rst": "text",
}  # fmt: skip
_HTML: Final = re.compile(rb"<(!doctype html|html|head|body|p|div|h[1-6]|article)[\s>]", re.I)
_MARKDOWN: Final = re.compile(r"^(#{1,6} \S|```|~~~|\s*[-*+] \S|\s*\d+\. \S|\|.*\|\s*$)", re.M)


class KnowledgeMemory(Protocol):
    """What ingestion needs of semantic memory (``SemanticMemory`` has it)."""

    async def add(
        self, text: str, *, scope: Scope, metadata: Mapping[str, Any] | None = None,
        source: Source | None = None, id: str | None = None,
    ) -> WriteResult: ...  # fmt: skip

    async def list(
        self, scope: Scope, *, filters: Mapping[str, Any] | None = None,
        include_superseded: bool = False, limit: int = 100, after: str | None = None,
    ) -> list[MemoryItem]: ...  # fmt: skip

    async def forget(self, ids: str | Sequence[str], *, tenant: str = "") -> int: ...


class IngestReport(msgspec.Struct, frozen=True):
    """What an ingestion did: the chunks' ids in order, how many old chunks it removed,
    and the chunks memory kept as duplicates of an item it already had."""

    document: str
    kind: str
    title: str | None
    chunks: int
    ids: list[str]
    removed: int = 0
    duplicates: dict[str, str] = {}  # chunk id -> the item it repeats


async def ingest(
    memory: KnowledgeMemory,
    source: str | bytes | os.PathLike[str],
    *,
    document: str | None = None,
    scope: Scope | None = None,
    kind: Kind | None = None,
    title: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    overlap: int = OVERLAP,
) -> IngestReport:
    """Add ``source`` to ``memory`` as chunks (see the module's doc).

    ``source``: a path (``Path``, or a one-line str naming an existing file), bytes or
    text. ``document`` is the id citations show and re-ingestion matches on (default:
    the path as given, else ``sha256:<digest>`` of the content). ``chunk_tokens`` and
    ``overlap`` are in the gateway's tokens (o200k_base). ``metadata`` is added to each
    chunk's (with ``document``, ``kind``, ``chunk`` and, for PDFs, ``page``).
    """
    scope = scope or Scope()
    data, path = _read(source)
    kind = kind or _sniff(data, path)
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)} or None (sniffed), not {kind!r}")
    document = document or (str(path) if path is not None else _digest_id(data))
    parsed = _parse(data, kind)
    counter = TokenCounter()
    chunks = chunk(parsed, counter.text, max_tokens=chunk_tokens, overlap=overlap)
    doc_key = _key(scope, document)
    title = title or parsed.title
    base = {**(metadata or {}), "document": document, "kind": kind, "ingest": doc_key}
    rows = [(_chunk_id(doc_key, c), c) for c in chunks]

    wanted = {id for id, _ in rows}
    stale = [i.id for i in await _listed(memory, scope, doc_key) if i.id not in wanted]
    removed = await memory.forget(stale, tenant=scope.tenant) if stale else 0
    entries = [
        (c.text, _metadata(base, c), id,
         Source(document, title, c.index, c.start, c.end, " > ".join(c.heading) or None))
        for id, c in rows
    ]  # fmt: skip
    results = await _write(memory, entries, scope)
    duplicates = {
        id: r.duplicate_of
        for (_, _, id, _), r in zip(entries, results, strict=True)
        if r.status == "duplicate" and r.duplicate_of is not None and r.duplicate_of != id
    }
    ids = [id for id, _ in rows]
    return IngestReport(document, kind, title, len(rows), ids, removed, duplicates)


async def _write(
    memory: KnowledgeMemory, entries: list[tuple[str, dict[str, Any], str, Source]], scope: Scope
) -> list[WriteResult]:
    """The chunks in one store write where the memory takes many at once
    (``SemanticMemory.add_many`` with its ``NewItem``), else one by one."""
    add_many = getattr(memory, "add_many", None)
    new_item = getattr(items_module, "NewItem", None)
    if add_many is not None and new_item is not None:
        batch = [
            new_item(text, metadata, source=source, id=id) for text, metadata, id, source in entries
        ]
        written: list[WriteResult] = await add_many(batch, scope=scope)
        return written
    return [
        await memory.add(text, scope=scope, metadata=metadata, source=source, id=id)
        for text, metadata, id, source in entries
    ]


def _read(source: str | bytes | os.PathLike[str]) -> tuple[bytes, Path | None]:
    if isinstance(source, bytes):
        return source, None
    if isinstance(source, str):
        if "\n" not in source and len(source) < 4096 and os.path.isfile(source):
            return Path(source).read_bytes(), Path(source)
        return source.encode(), None
    if isinstance(source, os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no document at {path}")
        return path.read_bytes(), path
    raise TypeError(f"source must be a path, bytes or str, not {type(source).__name__}")


def _sniff(data: bytes, path: Path | None) -> Kind:
    if path is not None and path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]  # type: ignore[return-value]
    head = data[:4096]
    if head.lstrip().startswith(b"%PDF"):
        return "pdf"
    if _HTML.search(head):
        return "html"
    if _MARKDOWN.search(head.decode("utf-8", "replace")):
        return "markdown"
    return "text"


def _parse(data: bytes, kind: Kind) -> Parsed:
    if kind == "pdf":
        from .pdf import parse_pdf

        return parse_pdf(data)
    text = data.decode("utf-8", "replace")
    if kind == "markdown":
        from .markdown import parse_markdown

        return parse_markdown(text)
    if kind == "html":
        from .html import parse_html

        return parse_html(text)
    from .plain import parse_text

    return parse_text(text)


def _key(scope: Scope, document: str) -> str:
    """The document's key in its scope: the same document in two scopes is two."""
    raw = "\0".join((scope.tenant, scope.user or "", scope.agent or "", document))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _chunk_id(doc_key: str, c: Chunk) -> str:
    """Stable while the chunk's index and text are: unchanged chunks are not rewritten."""
    digest = hashlib.sha256(c.text.encode()).hexdigest()[:8]
    return f"doc-{doc_key}-{c.index:05d}-{digest}"


def _digest_id(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def _metadata(base: dict[str, Any], c: Chunk) -> dict[str, Any]:
    out = {**base, "chunk": c.index}
    if c.page is not None:
        out["page"] = c.page
        if c.page_end is not None and c.page_end != c.page:
            out["page_end"] = c.page_end
    return out


async def _listed(memory: KnowledgeMemory, scope: Scope, doc_key: str) -> list[MemoryItem]:
    """Every chunk an earlier ingestion of the document left (superseded ones too)."""
    out: list[MemoryItem] = []
    after = None
    while True:
        page = await memory.list(
            scope, filters={"ingest": doc_key}, include_superseded=True, limit=500, after=after
        )
        out.extend(page)
        if len(page) < 500:
            return out
        after = page[-1].id
