"""Context assembly: what goes in front of the model for one call, within a token budget.

``await assemble(task, budget=8000, messages=..., items=..., summaries=...)`` gathers,
de-duplicates, ranks and fits; :class:`ContextBuilder` reads the inputs from session
and semantic memory first. See docs/memory-context.md.
"""

from __future__ import annotations

from .assemble import assemble
from .builder import ContextBuilder
from .counting import TokenCounter
from .summarize import GatewaySummarizer, Summarizer
from .types import AssembledContext, ContextBudgetError, Included, LeftOut, Summary

__all__ = [
    "AssembledContext",
    "ContextBudgetError",
    "ContextBuilder",
    "GatewaySummarizer",
    "Included",
    "LeftOut",
    "Summarizer",
    "Summary",
    "TokenCounter",
    "assemble",
]
