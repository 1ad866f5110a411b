"""Whether a new fact repeats, supersedes or sits beside a similar old one.

:class:`SemanticMemory` asks a :class:`Resolver` about each live, older item of the
same scope whose embedding is close to a new item's (cosine >= ``floor``). The default,
:class:`SimilarityResolver`, decides from the cosine plus token checks; it is written
for precision, because "duplicate" drops the new fact and "supersedes" hides the old
one, while a wrong "distinct" only keeps a near-duplicate (measured on
``tests/data/fact_pairs.json`` by ``benchmarks/semantic_resolver_eval.py``; numbers in
docs/memory-semantic.md). A judge that asks a model through the gateway can replace it:
any object with ``floor`` and ``judge``.

* duplicate: a true paraphrase only: the same content words (after folding case,
  inflection, spelling variants, number words and stopwords) and the same negation;
  cosine alone cannot tell "Deploys to staging ..." from "Deploys to production ...".
* supersedes: the same subject clearly gets a new value: the texts share their
  subject and verb (at least two leading content words, "the user lives"), then differ
  in exactly one run of words that is not followed by a verb (else the run was part of
  the subject: "Order 1234 has shipped" / "Order 5678 ..."), the run holds no
  identifier-like number ("rack 4" / "rack 5" is another thing), and a multi-valued
  relation ("is allergic to", "speaks", "likes") changes only in a count; or the same
  words with the negation flipped ("the user likes jazz" / "... does not like jazz").
* anything else: distinct (both kept).
"""

from __future__ import annotations

import difflib
import re
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


_SPELLING = {"colour": "color", "favourite": "favorite", "favourites": "favorites"}
# Words that carry no fact of their own: dropped before comparing content.
_STOPWORDS = {
    "a", "an", "the", "my", "our", "your", "their", "his", "her", "its", "this", "that",
    "'s", "to", "of", "in", "on", "at", "for", "with", "by", "from", "into", "as",
    "and", "also", "is", "are", "was", "were", "be", "been", "am", "does", "do", "did",
    "currently", "now", "still", "actually", "just",
}  # fmt: skip
# Verbs that say "the value changed": "the meeting moved to 4pm" reads "the meeting is 4pm".
_UPDATE_VERBS = {"moved", "changed", "switched", "updated", "became", "becomes", "is", "are"}
_UPDATE_VERBS |= {"was", "were"}
# Words after which a changed run is a predicate, so the run before them was the subject.
_VERBS = {
    "is", "are", "was", "were", "has", "have", "had", "will", "would", "must", "should",
    "can", "could", "may", "might", "need", "needs", "does", "do", "did", "shipped",
}  # fmt: skip
# Relations that hold many values at once: a new value is another fact, not an update.
_MULTI = {
    "allergic", "like", "love", "enjoy", "speak", "play", "own", "visit", "know", "use",
    "drink", "eat", "manage", "has", "have", "learn", "support", "read", "watch",
}  # fmt: skip
_MULTI_STEMS: set[str] = set()  # filled below, once stem() is defined
_MONTHS = {
    "january", "february", "march", "april", "may", "june", "july", "august",
    "september", "october", "november", "december",
}  # fmt: skip
_TIME_OF_DAY = re.compile(r"^(\d+)(am|pm)$")


def names(text: str) -> set[str]:
    """Capitalised words after the first (proper names: cities, people, days), folded."""
    words = _TOKEN.findall(text.replace("\u2019", "'"))
    return {w.casefold() for w in words[1:] if w[:1].isupper()}


def stem(word: str) -> str:
    """A light stem: enough to fold "lives"/"live", "shipped"/"ship", "colour"/"color"."""
    word = _SPELLING.get(word, word)
    if any(c.isdigit() for c in word) or word in _VERBS or word in _STOPWORDS:
        return word
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + keep
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # "shipped" -> "shipp" -> "ship"
    return word[:-1] if len(word) > 3 and word.endswith("e") else word  # "lives" = "live"


_MULTI_STEMS.update(stem(w) for w in _MULTI)


def _is_number(word: str) -> bool:
    return any(c.isdigit() for c in word)


def _words(text: str) -> list[str]:
    out: list[str] = []
    for t in tokens(text):
        m = _TIME_OF_DAY.match(t)
        out.extend([m.group(1), m.group(2)] if m else [t])
    return out


def content(text: str) -> list[str]:
    """The stemmed content words of a text in order (negations and stopwords dropped)."""
    return [stem(w) for w in _words(text) if w not in _STOPWORDS and w not in _NEGATIONS]


def _frame(text: str) -> list[tuple[str, str]]:
    """(stem, word before it) for each word kept to compare the shape of two facts:
    stopwords dropped, an update verb read as "is", negations dropped."""
    out: list[tuple[str, str]] = []
    previous = ""
    for w in _words(text):
        if w in _NEGATIONS:
            previous = w
            continue
        if w in _UPDATE_VERBS:
            if not out or out[-1][0] != "is":
                out.append(("is", previous))
        elif w not in _STOPWORDS:
            out.append((stem(w), previous))
        previous = w
    return out


def _negated(text: str) -> bool:
    return bool(_NEGATIONS & set(_words(text)))


@dataclass(frozen=True, slots=True)
class Features:
    """What the default rule reads from a pair of texts."""

    paraphrase: bool  # same content words and negation: the same fact, maybe reworded
    negation_flip: bool  # the same content words, one side negated
    new_value: bool  # same subject and verb, one other value (see the module doc)


def features(old: str, new: str) -> Features:
    same_words = sorted(set(content(old))) == sorted(set(content(new)))
    flipped = _negated(old) != _negated(new)
    return Features(same_words and not flipped, same_words and flipped, _new_value(old, new))


def _new_value(old: str, new: str) -> bool:
    a, b = _frame(old), _frame(new)
    sa, sb = [w for w, _ in a], [w for w, _ in b]
    ops = difflib.SequenceMatcher(a=sa, b=sb, autojunk=False).get_opcodes()
    changed = [op for op in ops if op[0] != "equal"]
    if len(changed) != 1 or changed[0][0] != "replace":
        return False
    _, i1, i2, j1, j2 = changed[0]
    prefix = sa[:i1]
    if len(prefix) < 2:
        return False  # the subject and its verb must be shared
    if i2 < len(sa) and sa[i2] in _VERBS:
        return False  # the changed run is followed by a verb: it was (part of) the subject
    run = a[i1:i2] + b[j1:j2]
    if any(w in _VERBS for w, _ in run) or (_gerund(a[i1][0], old) and _gerund(b[j1][0], new)):
        return False  # the verb changed ("need" / "require"), not the value
    for word, before in run:
        # A number right after a noun is an identifier ("Order 1234", "rack 4"), not a value.
        if _is_number(word) and before and before.isalpha() and not _is_value_slot(before):
            return False
    # "allergic to peanuts" / "... to shellfish": two facts, both kept; a count may change.
    multi = any(w in _MULTI_STEMS for w in prefix)
    return not multi or all(_is_number(w) for w, _ in run)


def _gerund(stemmed: str, text: str) -> bool:
    return f"{stemmed}ing" in text.casefold() or f"{stemmed}eing" in text.casefold()


def _is_value_slot(word: str) -> bool:
    """Whether a number after this word is a value (a time, a count, a date)."""
    return (
        word in _STOPWORDS
        or word in _VERBS
        or word in _MONTHS
        or word in _MULTI
        or word in {"up", "about", "around", "until", "every", "per", "than", "over", "under"}
        or (word.endswith("s") and not word.endswith("'s"))  # "costs 10", "opens 9"
    )


class SimilarityResolver:
    """The default rule, precision first (see the module doc):

    * duplicate: cosine >= ``dedupe`` and the texts are paraphrases (same content
      words, same negation);
    * supersedes: cosine >= ``supersede - SLOT_SLACK`` and the same subject gets a new
      value, or the same words have the negation flipped;
    * otherwise distinct: both are kept.

    ``supersede=None`` turns contradiction handling off (duplicates only)."""

    # The structure carries the precision; the cosine only has to say "same topic":
    # "I live in Paris" -> "I now live in Berlin" is only 0.51 apart.
    SLOT_SLACK = 0.27

    def __init__(self, dedupe: float, supersede: float | None) -> None:
        for name, value in (("dedupe", dedupe), ("supersede", supersede)):
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be a cosine in (0, 1], got {value}")
        self.dedupe = dedupe
        self.supersede = supersede
        self.floor = dedupe if supersede is None else min(dedupe, supersede - self.SLOT_SLACK)

    async def judge(self, new: MemoryItem, old: MemoryItem, similarity: float) -> Verdict:
        return self.decide(old.text, new.text, similarity)

    def decide(self, old: str, new: str, similarity: float) -> Verdict:
        f = features(old, new)
        if similarity >= self.dedupe and f.paraphrase:
            return "duplicate"
        if self.supersede is None or similarity < self.supersede - self.SLOT_SLACK:
            return "distinct"
        if f.negation_flip or f.new_value:
            return "supersedes"
        return "distinct"
