"""Knowledge: documents (text, Markdown, HTML, PDF) ingested into semantic memory as
chunks that keep where they came from, and citations for what a search finds.

``report = await ingest(memory, Path("guide.md"), scope=Scope("acme"))``, then
``hits = await memory.search("how do I install it?", scope=...)`` and ``cite(hits[0])``.
The parsers load on first use (markdown-it-py, selectolax, pypdf: the ``memory``
extra). See docs/knowledge.md.
"""

from __future__ import annotations

from .citations import cite, format_source
from .ingest import CHUNK_TOKENS, OVERLAP, IngestReport, KnowledgeMemory, ingest

__all__ = [
    "CHUNK_TOKENS",
    "OVERLAP",
    "IngestReport",
    "KnowledgeMemory",
    "cite",
    "format_source",
    "ingest",
]
