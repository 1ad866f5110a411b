"""Whether a new fact repeats, supersedes or sits beside a similar old one.

:class:`SemanticMemory` asks a :class:`Resolver` about each live, older item of the
same scope whose embedding is close to a new item's (cosine >= ``floor``). The default,
:class:`SimilarityResolver`, decides from the cosine plus a few token checks; its
thresholds were chosen by measurement on ``tests/data/fact_pairs.json``
(``benchmarks/semantic_resolver_eval.py``; numbers in docs/memory-semantic.md). A
judge that asks a model through the gateway can replace it: any object with ``floor``
and ``judge``.

What the token checks see (cosine alone cannot tell "the user lives in Berlin" from
"the user's sister lives in Paris" when the old fact is "the user lives in Paris"):

* a value conflict: the two texts hold different numbers, or one is negated and the
  other not: never a duplicate, however close, and a contradiction when close;
* a new subject: one text is the other plus a possessive ("Alice's husband works at
  Google" beside "Alice works at Google"), or only their opening words differ ("Order
  1234 has shipped" / "Order 5678 has shipped"): never the same fact;
* one slot changed: the texts share their first words and differ in one run of words
  ("the user lives in Paris" / "... in Berlin"): the shape of an update.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .items import MemoryItem

Verdict = Literal["duplicate", "supersedes", "distinct"]


@runtime_checkable
class Resolver(Protocol):
    """Judges a new item against one similar, older, live item of the same scope."""

    floor: float  # neighbours less similar than this are not judged (distinct)

    async def judge(self, new: MemoryItem, old: MemoryItem, similarity: float) -> Verdict: ...


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
}
_ORDINALS = {"first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5"}
_NEGATIONS = {
    "not",
    "no",
    "never",
    "n't",
    "none",
    "nothing",
    "neither",
    "nor",
    "without",
    "anymore",
}
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.@\-][A-Za-z0-9]+)*|n't|'s")
_ORDINAL_DIGITS = re.compile(r"^(\d+)(?:st|nd|rd|th)$")


def tokens(text: str) -> list[str]:
    """Lower-cased words; "n't" and "'s" kept as tokens; number words as digits."""
    out = []
    for t in _TOKEN.findall(text.replace("\u2019", "'")):
        t = t.casefold()
        t = _NUMBER_WORDS.get(t) or _ORDINALS.get(t) or _ORDINAL_DIGITS.sub(r"\1", t)
        out.append(t)
    return out


def names(text: str) -> set[str]:
    """Capitalised words after the first (proper names: cities, people, days), folded."""
    words = _TOKEN.findall(text.replace("\u2019", "'"))
    return {w.casefold() for w in words[1:] if w[:1].isupper()}


@dataclass(frozen=True, slots=True)
class Features:
    """What the default rule reads from a pair of texts."""

    value_conflict: bool  # different numbers, or one side negated
    new_subject: bool  # a possessive added, or only the opening words differ
    one_slot: bool  # same opening words, one changed run of words


def features(old: str, new: str) -> Features:
    a, b = tokens(old), tokens(new)
    numbers_a = {t for t in a if any(c.isdigit() for c in t)}
    numbers_b = {t for t in b if any(c.isdigit() for c in t)}
    negated_a, negated_b = bool(_NEGATIONS & set(a)), bool(_NEGATIONS & set(b))
    named = bool(names(old) - set(b) or names(new) - set(a))
    conflict = numbers_a != numbers_b or negated_a != negated_b or named
    blocks = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    changed = [op for op in blocks if op[0] != "equal"]
    # One side is the other plus a possessive ("Alice" -> "Alice's husband"): another subject.
    subject = all(op[0] == "insert" for op in changed) and "'s" in _inserted(b, changed)
    subject |= all(op[0] == "delete" for op in changed) and "'s" in _deleted(a, changed)
    # Only an opening word or two is swapped, the rest is the same ("Order 1234 has
    # shipped" / "Order 5678 ..."; "The office is on ..." / "The cafeteria ..."): another
    # thing, not another value of the same thing.
    if len(changed) == 1:
        op, i1, i2, j1, j2 = changed[0]
        swapped = op == "replace" and i2 - i1 == j2 - j1 <= 2
        subject |= swapped and i1 <= 1 and len(a) - i2 >= 2
    one_slot = (
        len(changed) == 1
        and changed[0][0] == "replace"
        and blocks[0][0] == "equal"
        and (blocks[0][2] - blocks[0][1]) >= 2
    )
    return Features(conflict, subject, one_slot)


def _inserted(b: list[str], ops: Sequence[tuple[str, int, int, int, int]]) -> list[str]:
    return [w for op in ops for w in b[op[3] : op[4]]]


def _deleted(a: list[str], ops: Sequence[tuple[str, int, int, int, int]]) -> list[str]:
    return [w for op in ops for w in a[op[1] : op[2]]]


class SimilarityResolver:
    """The default rule (measured, see the module doc):

    * duplicate: cosine >= ``dedupe`` and no value conflict;
    * supersedes: cosine >= ``supersede`` and a value conflict; or one changed slot
      and cosine >= ``supersede + SLOT_ONLY`` (templated texts such as "Ticket about
      login failure" / "... rate limits" sit at 0.73); or both and cosine >=
      ``supersede - SLOT_AND_VALUE`` (the strongest shape of an update: "the user
      lives in Paris" -> "... in Berlin" is only 0.64 apart);
    * otherwise distinct; a new subject is always distinct.

    ``supersede=None`` turns contradiction handling off (duplicates only)."""

    SLOT_AND_VALUE = 0.12
    SLOT_ONLY = 0.06

    def __init__(self, dedupe: float, supersede: float | None) -> None:
        for name, value in (("dedupe", dedupe), ("supersede", supersede)):
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be a cosine in (0, 1], got {value}")
        self.dedupe = dedupe
        self.supersede = supersede
        self.floor = dedupe if supersede is None else min(dedupe, supersede - self.SLOT_AND_VALUE)

    async def judge(self, new: MemoryItem, old: MemoryItem, similarity: float) -> Verdict:
        return self.decide(old.text, new.text, similarity)

    def decide(self, old: str, new: str, similarity: float) -> Verdict:
        f = features(old, new)
        if f.new_subject:
            return "distinct"
        if similarity >= self.dedupe and not f.value_conflict:
            return "duplicate"
        if self.supersede is None:
            return "distinct"
        if similarity >= self.supersede and f.value_conflict:
            return "supersedes"
        if similarity >= self.supersede + self.SLOT_ONLY and f.one_slot:
            return "supersedes"
        if similarity >= self.supersede - self.SLOT_AND_VALUE and f.value_conflict and f.one_slot:
            return "supersedes"
        return "distinct"
