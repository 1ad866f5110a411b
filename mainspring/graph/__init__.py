"""Graph authoring and the compiled, validated graph."""

from .builder import Graph
from .compiled import CompiledGraph
from .types import END, START, Retry, Send

__all__ = ["END", "START", "CompiledGraph", "Graph", "Retry", "Send"]
