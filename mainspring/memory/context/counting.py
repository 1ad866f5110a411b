"""Token counts for context assembly: cached per text, counted as the chat format counts.

Counting is what assembly costs: a 200-turn thread re-read every turn is the same 200
texts each time. Counts are kept per encoding in a bounded cache keyed by the text's
hash and length (not the text: a cache of long tool outputs would hold them all), so a
message is tokenised once per process however often it is assembled.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from ...models.messages import ImagePart, Message, Part, TextPart, ToolCall
from ...models.tokens import (
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_PER_REPLY,
    counter,
    encoding_for,
)

CACHE_ENTRIES: Final = 65_536  # ~6 MB of counts; a dict of ints keyed by (hash, len)
MARKER: Final = " [...truncated]"

_BREAK = re.compile(r"\s+\S*$")  # the last (partial) word, to cut before it


class TokenCounter:
    """Counts for one encoding, with a cache shared by every counter of that encoding."""

    __slots__ = ("_cache", "_count", "backend", "encoding")

    def __init__(self, model: str | None = None) -> None:
        self.encoding = encoding_for(model)
        self.backend, self._count = counter(self.encoding)
        self._cache = _cache_for(self.encoding)

    def text(self, text: str) -> int:
        if not text:
            return 0
        key = (hash(text), len(text))
        n = self._cache.get(key)
        if n is None:
            n = self._count(text)
            if len(self._cache) >= CACHE_ENTRIES:
                _evict(self._cache)
            self._cache[key] = n
        return n

    def known(self, message: Message) -> tuple[int, bool]:
        """(tokens, estimated): the exact count when every text of ``message`` has been
        counted before, else an estimate from its length (about 4 characters a token)
        without tokenising: what assembly reports for messages it never had to weigh."""
        total = TOKENS_PER_MESSAGE + self.text(message.role)
        estimated = False
        for part in message.content:
            if isinstance(part, TextPart) and part.text:
                n = self._cache.get((hash(part.text), len(part.text)))
                if n is None:
                    n, estimated = -(-len(part.text) // 4), True
                total += n
            else:
                total += self.part(part, self.text)
        return total, estimated

    def message(self, message: Message) -> int:
        """One message's tokens in the chat format, as ``count_message_tokens`` counts
        them (its per-message framing; not the reply's priming)."""
        text = self.text
        total = TOKENS_PER_MESSAGE + text(message.role)
        if message.name:
            total += TOKENS_PER_NAME + text(message.name)
        for part in message.content:
            total += self.part(part, text)
        return total

    @staticmethod
    def part(part: Part, text: Callable[[str], int]) -> int:
        if isinstance(part, TextPart):
            return text(part.text)
        if isinstance(part, ToolCall):
            arguments = msgspec.json.encode(part.arguments).decode()
            return text(part.name) + text(arguments) + TOKENS_PER_MESSAGE
        assert isinstance(part, ImagePart)
        return TOKENS_PER_IMAGE

    def messages(self, messages: Iterable[Message]) -> int:
        """A whole prompt, reply priming included: ``count_message_tokens``, cached."""
        return TOKENS_PER_REPLY + sum(self.message(m) for m in messages)

    def truncate(self, text: str, limit: int, marker: str = MARKER) -> str:
        """The longest prefix of ``text`` (cut between words where it can) that, with
        ``marker``, counts at most ``limit`` tokens; "" when not even the marker fits."""
        total = self.text(text)
        if total <= limit:
            return text
        room = limit - self._count(marker)
        if room <= 0:
            return ""
        # Cut in proportion to the tokens wanted, then shrink until it fits: counts
        # are near-linear in length, so this takes two or three counts, not a search.
        cut = max(1, len(text) * room // total)
        while cut > 0:
            head = text[:cut]
            word_cut = _BREAK.search(head)
            if word_cut is not None and word_cut.start() > cut // 2:
                head = head[: word_cut.start()]
            n = self._count(head)
            if n <= room:
                return head.rstrip() + marker
            cut = min(cut - 1, cut * room // n - 1)
        return ""


@functools.cache
def _cache_for(encoding: str) -> dict[tuple[int, int], int]:
    return {}


def _evict(cache: dict[tuple[int, int], int]) -> None:
    """Drop the oldest eighth (a dict keeps insertion order): cheap, and a hot text that
    goes is counted again once."""
    try:
        for key in list(cache)[: CACHE_ENTRIES // 8]:
            cache.pop(key, None)
    except RuntimeError:  # another thread changed it while we listed: evict next time
        pass
