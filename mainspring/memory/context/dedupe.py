"""Duplicates across sources: the same text, or nearly (normalised, then word overlap).

A memory item that says what a message in the context already says costs tokens and
tells the model nothing. Texts are compared normalised (case folded, ASCII punctuation and
runs of spaces dropped); two texts whose word sets overlap by ``NEAR`` or more
(Jaccard) count as the same.
"""

from __future__ import annotations

import functools
from typing import Final

NEAR: Final = 0.9  # Jaccard similarity of word sets from which two texts are one
# ASCII punctuation and control characters to spaces, on the UTF-8 bytes (a table lookup
# per byte: 3x a Unicode regex); bytes of other characters pass as they are.
_ASCII_WORDS: Final = bytes(i if i >= 128 or chr(i).isalnum() else 32 for i in range(256))


def normalise(text: str) -> str:
    return _shape(text)[0]


@functools.lru_cache(maxsize=16_384)
def _shape(text: str) -> tuple[str, frozenset[str]]:
    """The normalised text and its set of words, once per text (threads are re-read
    every turn)."""
    words = text.casefold().encode().translate(_ASCII_WORDS).decode().split()
    return " ".join(words), frozenset(words)


class Seen:
    """Texts already in the context, to ask whether a new one repeats one of them."""

    __slots__ = ("_exact", "_words")

    def __init__(self) -> None:
        self._exact: dict[str, str] = {}  # normalised text -> id
        self._words: list[tuple[frozenset[str], int, str]] = []

    def add(self, text: str, id: str) -> None:
        norm, words = _shape(text)
        if norm:
            self._exact.setdefault(norm, id)
            self._words.append((words, len(words), id))

    def repeats(self, text: str) -> str | None:
        """The id of a text already seen that ``text`` repeats, or None."""
        norm, words = _shape(text)
        if not norm:
            return None
        same = self._exact.get(norm)
        if same is not None:
            return same
        n = len(words)
        low, high = NEAR * n, n / NEAR
        for other, m, id in self._words:
            # |A & B| / |A | B| <= min/max: sizes alone rule most pairs out.
            if m < low or m > high:
                continue
            common = len(words & other)
            if common >= NEAR * (n + m - common):
                return id
        return None
