"""Knowledge: documents (text, Markdown, HTML, PDF) ingested into semantic memory as
chunks that keep where they came from, and citations for what a search finds."""

from __future__ import annotations

from .citations import cite

__all__ = ["cite"]
