"""A resolver that asks a model, through the gateway, what a close pair of facts is.

The default rule (:class:`~.resolver.SimilarityResolver`) is right about updates
about 4 times in 5 (docs/memory-semantic.md); what it misses needs language
understanding ("single" / "married", "vegetarian" / "does not eat meat"). This judge
sends each pair the embedding finds close (cosine >= ``floor``) to a model with a
structured answer; if the model fails (an outage, a budget), the default rule
decides, so a write is never lost to a judge's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ...models.errors import ModelError
from ...models.messages import ModelResponse
from .items import MemoryItem
from .resolver import Resolver, SimilarityResolver, Verdict

PROMPT = """You maintain a memory of facts. An OLD fact is stored; a NEW fact arrives.
Answer with one verdict:
- "duplicate": NEW says the same thing as OLD (a paraphrase; nothing changed).
- "supersedes": NEW is about the same subject as OLD but gives another value, so OLD \
is no longer true (an update or a correction).
- "distinct": NEW is another fact (another subject, or compatible with OLD); keep both.

OLD: {old}
NEW: {new}"""


@dataclass(frozen=True)
class Judgement:
    """The model's answer (a dataclass: the gateway's structured output takes pydantic types)."""

    verdict: Literal["duplicate", "supersedes", "distinct"]


class Completes(Protocol):
    """What the judge needs of a :class:`~mainspring.models.gateway.Gateway`."""

    async def complete(self, model: str, prompt: Any, /, **options: Any) -> ModelResponse: ...


class ModelResolver:
    """Judges close pairs with ``model`` through ``gateway`` (temperature 0)."""

    def __init__(
        self,
        gateway: Completes,
        model: str,
        *,
        floor: float = 0.55,
        fallback: Resolver | None = None,
    ) -> None:
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be a cosine in (0, 1], got {floor}")
        self.gateway = gateway
        self.model = model
        self.floor = floor
        self.fallback = fallback or SimilarityResolver(0.85, 0.72)

    async def judge(self, new: MemoryItem, old: MemoryItem, similarity: float) -> Verdict:
        prompt = PROMPT.format(old=old.text, new=new.text)
        try:
            response = await self.gateway.complete(
                self.model, prompt, output=Judgement, temperature=0.0
            )
        except ModelError:
            return await self.fallback.judge(new, old, similarity)
        answer = response.output
        if isinstance(answer, Judgement):
            return answer.verdict
        return await self.fallback.judge(new, old, similarity)
