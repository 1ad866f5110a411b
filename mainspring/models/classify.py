"""The router pattern: a small, fast classifier picks the model or the path for a text.

Two routers share one shape, ``await router.route(text) -> Route(label, score, by)``:

* :class:`RuleRouter`: ordered rules (a regular expression, keywords, a predicate on
  the text), the first that matches wins, else the default; microseconds.
* :class:`CentroidRouter`: nearest centroid over embeddings, trained from a few
  labelled examples per label (``await CentroidRouter.train(embedder, {...})``);
  with the local model ~2 ms per new short text on one core, embedding included,
  about a microsecond for a text seen recently (``benchmarks/workloads/router.py``).

``score`` is 1.0 for a rule match and 0.0 for a default by rules; for centroids it is
the cosine between the text and the chosen label's centroid. ``by`` says what decided:
``rule:<name>``, ``default``, ``centroid``.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from .protocol import EmbeddingProvider

_LONGEST_KEPT = 4096  # characters: a recent route's key is its whole text


class Route(msgspec.Struct, frozen=True):
    label: str
    score: float
    by: str


@runtime_checkable
class Router(Protocol):
    async def route(self, text: str) -> Route: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """``label`` when every condition given holds: ``pattern`` (searched; a string is
    compiled case-insensitive), any of ``keywords`` (whole words, case-insensitive),
    ``predicate(text)``."""

    label: str
    pattern: str | re.Pattern[str] | None = None
    keywords: Sequence[str] = ()
    predicate: Callable[[str], bool] | None = None
    name: str = ""
    _checks: tuple[Callable[[str], object], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        checks: list[Callable[[str], object]] = []
        if self.pattern is not None:
            compiled = (
                re.compile(self.pattern, re.IGNORECASE)
                if isinstance(self.pattern, str)
                else self.pattern
            )
            checks.append(compiled.search)
        if isinstance(self.keywords, str):
            raise TypeError(f"rule {self.label!r}: keywords is a list of words, not one string")
        if self.keywords:
            words = "|".join(re.escape(k) for k in sorted(self.keywords, key=len, reverse=True))
            checks.append(re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE).search)
        if self.predicate is not None:
            checks.append(self.predicate)
        if not checks:
            raise ValueError(
                f"rule {self.label!r} has no condition: give a pattern, keywords or a predicate"
            )
        object.__setattr__(self, "_checks", tuple(checks))

    def matches(self, text: str) -> bool:
        return all(check(text) for check in self._checks)


class RuleRouter:
    """The first matching rule's label, in the order given; ``default`` if none match."""

    def __init__(self, rules: Sequence[Rule], default: str) -> None:
        if not default:
            raise ValueError("RuleRouter needs a default label for texts no rule matches")
        self.rules = tuple(rules)
        self.default = default
        self._routes = [
            Route(rule.label, 1.0, f"rule:{rule.name or i}") for i, rule in enumerate(self.rules)
        ]
        self._fallback = Route(default, 0.0, "default")

    def route_sync(self, text: str) -> Route:
        for rule, route in zip(self.rules, self._routes, strict=True):
            if rule.matches(text):
                return route
        return self._fallback

    async def route(self, text: str) -> Route:
        return self.route_sync(text)


class CentroidRouter:
    """Nearest centroid over embeddings: each label is the unit mean of its examples.

    With ``min_confidence``, a text whose cosine to its nearest centroid is below it
    gets ``default`` (``by="default"``) instead: the texts unlike every example.
    Centroids can be saved (:attr:`centroids`) and given back to the constructor, so a
    process need not embed the examples again.

    The routes of the last ``recent`` texts (default 1,024; 0 turns it off) are kept: a
    router sees the same prompts again and again (a retry, a resumed run, a template),
    and a repeated text is decided in about a microsecond instead of an embedding.
    Texts longer than 4,096 characters are not kept, which bounds the memory.
    """

    def __init__(
        self,
        embedder: EmbeddingProvider,
        centroids: Mapping[str, Sequence[float]],
        *,
        min_confidence: float | None = None,
        default: str | None = None,
        recent: int = 1024,
    ) -> None:
        if not centroids:
            raise ValueError("CentroidRouter needs at least one label")
        if min_confidence is not None and not default:
            raise ValueError("min_confidence needs a default label for texts below it")
        self.embedder = embedder
        self.labels = list(centroids)
        matrix = np.array([centroids[label] for label in self.labels], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != embedder.dimensions:
            raise ValueError(
                f"centroids must be vectors of {embedder.dimensions} floats "
                f"(the embedder {embedder.name!r}), got shape {matrix.shape}"
            )
        self._matrix = _unit(matrix)
        self.min_confidence = min_confidence
        self.default = default
        if recent < 0:
            raise ValueError(f"recent must be >= 0 (0 keeps no routes), got {recent}")
        self.recent = recent
        self._recent: OrderedDict[str, Route] = OrderedDict()

    @classmethod
    async def train(
        cls,
        embedder: EmbeddingProvider,
        examples: Mapping[str, Sequence[str]],
        *,
        min_confidence: float | None = None,
        default: str | None = None,
        recent: int = 1024,
    ) -> CentroidRouter:
        """Embed ``examples`` ({label: [texts]}) and build the router from their centroids."""
        for label, texts in examples.items():
            if isinstance(texts, str) or not texts:
                raise ValueError(f"label {label!r} needs a list of at least one example text")
        texts = [text for group in examples.values() for text in group]
        vectors = _unit(np.array(await embedder.embed(texts), dtype=np.float32))
        centroids: dict[str, list[float]] = {}
        start = 0
        for label, group in examples.items():
            centroids[label] = vectors[start : start + len(group)].mean(axis=0).tolist()
            start += len(group)
        return cls(
            embedder, centroids, min_confidence=min_confidence, default=default, recent=recent
        )

    @property
    def centroids(self) -> dict[str, list[float]]:
        return {label: row.tolist() for label, row in zip(self.labels, self._matrix, strict=True)}

    async def route(self, text: str) -> Route:
        kept = self._recent.get(text)
        if kept is not None:
            with contextlib.suppress(KeyError):  # another thread may have evicted it
                self._recent.move_to_end(text)
            return kept
        [embedded] = await self.embedder.embed([text])
        route = self._decide(np.asarray(embedded, dtype=np.float32))
        if self.recent and len(text) <= _LONGEST_KEPT:
            self._recent[text] = route
            while len(self._recent) > self.recent:
                self._recent.popitem(last=False)
        return route

    def _decide(self, vector: npt.NDArray[np.float32]) -> Route:
        scores = self._matrix @ _unit(vector)
        best = int(scores.argmax())
        score = float(scores[best])
        if self.min_confidence is not None and score < self.min_confidence:
            return Route(self.default or "", score, "default")
        return Route(self.labels[best], score, "centroid")


def _unit(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: npt.NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
    return unit
