"""An exact response cache: the same request gets the same answer without calling the model.

A request's key (:func:`cache_key`) is the sha256 of a canonical encoding of everything
that shapes the answer (model, messages, tools, tool choice, output schema, sampling
parameters), so it is the same in every process and for every dict ordering. Backends
implement the small :class:`ResponseCache` protocol: :class:`MemoryCache` here,
``SQLiteCache`` (``cache_sqlite``) and ``RedisCache`` (``cache_redis``); all pass one
conformance suite (tests/test_model_cache.py).

Backends only store: the gateway decides when to cache (opt-in per call) and marks a
hit ``cached=True``. Entries are stored encoded (``encode_entry``), so a caller that
changes a response it got cannot change the cache, and an entry that cannot be read
back (corrupt, or written by an incompatible version) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Final, Protocol, runtime_checkable

import msgspec

from .messages import ModelRequest, ModelResponse

KEY_VERSION: Final = 1  # bump when the key's encoding changes: old entries become misses
_FORMAT: Final = b"\x01"  # first byte of a stored entry: the entry format's version

_key_encoder = msgspec.json.Encoder(order="sorted")
_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(ModelResponse)


def cache_key(request: ModelRequest, *, scope: str = "") -> str:
    """The hex sha256 naming ``request``'s answer; ``scope`` separates tenants or users
    who must never share answers.

    Fields left at their default are encoded as absent, and dicts in sorted key order,
    so equal requests have equal keys in any process; a field that changes the answer
    (a message, a tool, its schema, a sampling parameter) changes the key.
    """
    temperature = None if request.temperature is None else float(request.temperature)
    canonical = (
        KEY_VERSION,
        scope,
        request.model,
        request.messages,
        request.tools,
        request.tool_choice,
        request.output,
        temperature,
        request.max_tokens,
        request.stop,
        request.params,
    )
    return hashlib.sha256(_key_encoder.encode(canonical)).hexdigest()


def encode_entry(response: ModelResponse) -> bytes:
    """``response`` as the bytes a backend stores."""
    return _FORMAT + _entry_encoder.encode(response)


def decode_entry(data: bytes | bytearray | memoryview | None) -> ModelResponse | None:
    """The response stored as ``data``; None when it is missing or cannot be read."""
    if not data or bytes(data[:1]) != _FORMAT:
        return None
    try:
        return _entry_decoder.decode(memoryview(data)[1:])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@runtime_checkable
class ResponseCache(Protocol):
    """Where cached responses live. ``ttl`` is in seconds (None: the backend's default,
    forever unless set); a ``ttl`` of zero or less stores nothing and removes the key."""

    async def get(self, key: str) -> ModelResponse | None: ...

    async def set(self, key: str, response: ModelResponse, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def clear(self) -> None: ...

    async def aclose(self) -> None: ...


def check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not isinstance(ttl, int | float):
        raise TypeError(f"ttl is seconds as a number or None, not {ttl!r}")
    return ttl


class MemoryCache:
    """In this process: least recently used entries evicted past ``max_items``, each
    expiring ``default_ttl`` seconds after it was set (None: never) unless ``set`` says."""

    def __init__(self, max_items: int = 10_000, default_ttl: float | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self.max_items = max_items
        self.default_ttl = check_ttl(default_ttl)
        # key -> (monotonic deadline or None, encoded entry); order is recency of use.
        self._entries: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()

    async def get(self, key: str) -> ModelResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline, data = entry
        if deadline is not None and deadline <= time.monotonic():
            del self._entries[key]
            return None
        response = decode_entry(data)
        if response is None:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return response

    async def set(self, key: str, response: ModelResponse, ttl: float | None = None) -> None:
        ttl = self.default_ttl if check_ttl(ttl) is None else ttl
        if ttl is not None and ttl <= 0:
            self._entries.pop(key, None)
            return
        deadline = None if ttl is None else time.monotonic() + ttl
        self._entries[key] = (deadline, encode_entry(response))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_items:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def clear(self) -> None:
        self._entries.clear()

    async def aclose(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
