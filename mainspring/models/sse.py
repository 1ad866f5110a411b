"""An incremental Server-Sent Events parser: bytes in, whatever their chunking, events out.

Follows the WHATWG event-stream rules: lines end in CRLF, LF or CR (a CR at the end
of one chunk and an LF at the start of the next are one line end); ``data:`` lines
join with ``\\n``; lines starting with ``:`` are comments; one space after the colon
is dropped; a blank line dispatches the event (none when it has no data); a
leading UTF-8 BOM is ignored; an event not closed by a blank line when the stream
ends is dropped. Bytes are decoded incrementally, so a character split across
chunks is decoded whole.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator

import msgspec

_LINE_END = re.compile(r"\r\n|\r|\n")


class ServerSentEvent(msgspec.Struct, frozen=True):
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None  # milliseconds, when the server set it


class SSEParser:
    """Feed it byte chunks (:meth:`feed`); it returns the events each chunk completed."""

    __slots__ = ("_after_cr", "_buffer", "_data", "_decoder", "_event", "_id", "_retry", "_started")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""  # an unfinished line
        self._after_cr = False  # the last chunk ended in CR: a leading LF is its pair
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None  # the last event id persists across events
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._buffer + text)
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                self._dispatch(events)
            elif line[0] != ":":
                self._field(line)
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        # any other field is ignored, as the spec says

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            events.append(
                ServerSentEvent(
                    "\n".join(self._data), self._event or "message", self._id, self._retry
                )
            )
        self._data = []
        self._event = ""


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """The events of a byte stream (e.g. ``response.aiter_raw()``), as they complete."""
    parser = SSEParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
