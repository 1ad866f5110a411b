"""The classifier's features: word unigrams and bigrams of a normalised text (each
symbol a word of its own), present or not. Character 4-grams were tried too: they cost
~3x the time per text and, on the held-out split, caught fewer injections (0.43 against
0.56 at the same false-positive rate, in 600-character windows). Pure Python, shared by training
(benchmarks/screen_train.py) and inference, so that both see exactly the same features.

Features are strings (the vocabulary is a dict of them), not hashes: Python's ``hash``
of a string changes per process, and a string key is as fast a lookup as an int.
"""

from __future__ import annotations

import math
import re
import unicodedata
from itertools import pairwise
from typing import Final

_WORD: Final = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")  # words, and each symbol alone
_SPACE: Final = re.compile(r"\s+")
WINDOW: Final = 120  # tokens per window a long text is scored in (see windows())
STRIDE: Final = 80


def normalise(text: str) -> str:
    """Lower case, compatibility forms folded (full-width, ligatures), whitespace collapsed."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", text.lower()).strip()


def windows(text: str) -> list[set[str]]:
    """The features present in each window of a text (presence, not counts: a repeated
    phrase is no more an injection the tenth time, and a set is the cheapest to build).

    A long text is cut into overlapping windows of ``WINDOW`` tokens, so that a short
    injection inside a long benign document is not averaged away; the text is tokenised
    once and each window's set is made from slices (in C), not by re-reading characters.
    """
    words = _WORD.findall(normalise(text))
    bigrams = [f"{a} {b}" for a, b in pairwise(words)]
    out = []
    for start in range(0, max(1, len(words)), STRIDE):
        end = start + WINDOW
        feats = set(words[start:end])
        feats.update(bigrams[start : end - 1])
        out.append(feats)
        if end >= len(words):
            break
    return out


def scale(feats: set[str]) -> float:
    """Each present feature's value: 1 / sqrt(n / 64) for a window of n features, so a
    short text is not drowned by its length and a long window's many weak features do
    not add up to a verdict (windows bound n)."""
    return 1.0 / math.sqrt(max(len(feats), 64) / 64)
