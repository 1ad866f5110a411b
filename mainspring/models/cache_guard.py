"""What two near-identical requests must agree on before one may reuse the other's answer.

Sentence embeddings put "cancel my order" and "do not cancel my order" (cosine 0.96
with all-MiniLM-L6-v2), "refund order 123" and "refund order 1234" (0.97), or "enable"
and "disable two-factor authentication" (0.90) closer together than many true
paraphrases: no threshold separates them. So the semantic cache checks, besides the
cosine, that both texts have the same polarity (an even or odd number of negations,
the same side of opposite verbs like enable/disable), the same numbers, the same
quoted strings and the same names (capitalised words, compared case-insensitively
against the other text's words). The rules are deliberately strict: a guard that
refuses a true paraphrase costs one model call, a wrong hit gives a user someone
else's answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "neither",
        "nor",
        "none",
        "nobody",
        "nothing",
        "nowhere",
        "without",
        "cannot",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "cant",
        "couldnt",
        "shouldnt",
        "hasnt",
        "havent",
        "hadnt",
        "mustnt",
        "neednt",
        "aint",
    ]
)

# Words that reverse a request while leaving its embedding almost where it was.
_OPPOSITES = (
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("activate", "deactivate"),
    ("subscribe", "unsubscribe"),
    ("lock", "unlock"),
    ("block", "unblock"),
    ("follow", "unfollow"),
    ("mute", "unmute"),
    ("install", "uninstall"),
    ("increase", "decrease"),
    ("add", "remove"),
    ("include", "exclude"),
    ("accept", "decline"),
    ("approve", "reject"),
    ("allow", "deny"),
    ("start", "stop"),
    ("open", "close"),
    ("buy", "sell"),
    ("import", "export"),
    ("upload", "download"),
    ("before", "after"),
    ("above", "below"),
    ("more", "less"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("higher", "lower"),
    ("cheapest", "most expensive"),
    ("true", "false"),
    ("on", "off"),
)
_SIDE = {
    word: (pair, side) for pair, words in enumerate(_OPPOSITES) for side, word in enumerate(words)
}

_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
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
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000"}

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUOTED = re.compile(r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")
_SENTENCE_END = re.compile(r"[.!?]\s*$")
_NOT_NAMES = frozenset({"i", "i'd", "i'm", "i've", "i'll"})


def normalise(text: str) -> str:
    """The form two texts must share to be the same request: Unicode-folded, lower case,
    one space between words, no closing punctuation."""
    folded = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(folded.lower().split()).strip(" .!?;,")


@dataclass(frozen=True, slots=True)
class Signature:
    """What must match between two texts for one to answer for the other."""

    negated: bool
    opposites: frozenset[tuple[int, int]]
    numbers: frozenset[str]
    quoted: frozenset[str]
    names: frozenset[str]
    words: frozenset[str]

    def agrees_with(self, other: Signature) -> bool:
        return (
            self.negated == other.negated
            and not _reversed(self.opposites, other.opposites)
            and self.numbers == other.numbers
            and self.quoted == other.quoted
            and self.names <= other.words
            and other.names <= self.words
        )


def signature(text: str) -> Signature:
    folded = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    raw_words = [(m.start(), m.group()) for m in _WORD.finditer(folded)]
    words = [w.lower() for _, w in raw_words]
    joined = " ".join(words)
    negations = sum(1 for w in words if w.replace("'", "") in _NEGATIONS or w.endswith("n't"))
    opposites = {_SIDE[w] for w in words if w in _SIDE}
    opposites |= {_SIDE[p] for p in _SIDE if " " in p and f" {p} " in f" {joined} "}
    numbers = {n.replace(",", "") for n in _NUMBER.findall(folded)}
    numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
    quoted = {normalise(a or b) for a, b in _QUOTED.findall(folded)}
    names = {
        _stem(w.lower())
        for start, w in raw_words
        if w[0].isupper() and not _starts_sentence(folded, start) and w.lower() not in _NOT_NAMES
    }
    return Signature(
        negated=negations % 2 == 1,
        opposites=frozenset(opposites),
        numbers=frozenset(numbers),
        quoted=frozenset(quoted),
        names=frozenset(names),
        words=frozenset(_stem(w) for w in words),
    )


def _reversed(a: frozenset[tuple[int, int]], b: frozenset[tuple[int, int]]) -> bool:
    """True if, for some opposite pair, the texts use different sides ("enable" vs
    "disable"); a word of a pair that only one text uses ("tell me more") is no reversal."""
    for pair in {p for p, _ in a} & {p for p, _ in b}:
        if {s for p, s in a if p == pair} != {s for p, s in b if p == pair}:
            return True
    return False


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or _SENTENCE_END.search(before) is not None


def _stem(word: str) -> str:
    # "Sunday" and "Sundays", "Alice" and "Alice's" name the same thing.
    word = word.removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
