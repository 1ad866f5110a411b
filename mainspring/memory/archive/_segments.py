"""The archive's segment files: frames, each compressed on its own and checksummed.

A segment starts with :data:`MAGIC`; then frames follow back to back, each
``<u32 payload length><u32 crc32 of the payload><payload>``, the payload a zstd frame
of the JSON of a :class:`Put` (a record) or a :class:`Remove` (a tombstone). A record
is read by decompressing its frame alone. Scanning stops at the first frame that is
incomplete or fails its checksum: that is a torn tail (a write that never finished),
and whatever follows it in that segment is ignored. Segments are written only at their
end; only compaction replaces them, by writing new ones.

zstd, not gzip or lzma: on JSON sessions (8 KB) it compresses 2.7x faster than zlib and
decompresses 2.5x faster at the same ratio (2.2 against 2.27); lzma gains 1% for 12x
the time (``benchmarks/memory_archive.py`` measures it again).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

try:
    import zstandard
except ImportError as exc:  # pragma: no cover - the memory extra is missing
    raise ImportError(
        "the memory archive compresses with zstd: pip install 'mainspring[memory]' "
        "(or pip install zstandard)"
    ) from exc

from .protocol import ArchiveCorruptError, ArchiveError, ArchiveRecord

MAGIC: Final = b"MSARCH1\n"
HEADER: Final = struct.Struct("<II")
SUFFIX: Final = ".seg"


class Put(msgspec.Struct, frozen=True, tag="put"):
    record: ArchiveRecord


class Remove(msgspec.Struct, frozen=True, tag="remove"):
    tenant: str
    ids: list[str]
    at: float


Frame = Put | Remove


class Scanned(msgspec.Struct, frozen=True):
    """A frame found by a scan: where it is (bytes from the segment's start) and what."""

    offset: int
    length: int
    frame: Frame


class FrameCodec:
    """Encodes frames to bytes and back (not thread-safe: one per archive, under its lock)."""

    def __init__(self, level: int = 3) -> None:
        self._compress = zstandard.ZstdCompressor(level=level).compress
        self._decompress = zstandard.ZstdDecompressor().decompress
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(Frame).decode

    def encode(self, frame: Frame) -> bytes:
        try:
            raw = self._encode(frame)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"an archive record's data must be JSON data: {exc}") from None
        payload = self._compress(raw)
        return HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    def decode(self, blob: bytes | memoryview, *, where: Callable[[], str]) -> Frame:
        """Decode one whole frame (header included); a bad one raises, naming ``where()``."""
        frame = self._try_decode(blob)
        if frame is None:
            raise ArchiveCorruptError(
                f"archive record at {where()} is damaged (checksum or format); restore the file "
                "from a backup, or remove it and reopen the archive to rebuild its index"
            )
        return frame

    def _try_decode(self, blob: bytes | memoryview) -> Frame | None:
        if len(blob) < HEADER.size:
            return None
        length, crc = HEADER.unpack_from(blob, 0)
        payload = blob[HEADER.size : HEADER.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None
        try:
            return self._decode(self._decompress(payload))
        except (zstandard.ZstdError, msgspec.DecodeError):
            return None

    def scan(self, path: Path, start: int) -> tuple[list[Scanned], int]:
        """The whole frames of a segment from byte ``start`` on, and where they end (the
        valid end: less than the file's size when its tail is torn)."""
        data = memoryview(path.read_bytes())
        check_magic(path, data)
        offset = max(start, len(MAGIC))
        found: list[Scanned] = []
        while offset + HEADER.size <= len(data):
            length = HEADER.size + HEADER.unpack_from(data, offset)[0]
            frame = self._try_decode(data[offset : offset + length])
            if frame is None:
                break
            found.append(Scanned(offset, length, frame))
            offset += length
        return found, min(offset, len(data))


def check_magic(path: Path, head: bytes | memoryview) -> None:
    """Refuse a file that is not a segment (a short prefix of the magic is a segment
    whose creation was torn: it holds nothing)."""
    if bytes(head[: len(MAGIC)]) != MAGIC[: len(head)]:
        raise ArchiveError(
            f"{path} is not a Mainspring archive segment; move it out of the archive's "
            "segments/ directory"
        )


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:08d}{SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    """The segments in ``directory``, oldest first (other files are not ours: ignored)."""
    numbers = []
    for path in directory.glob(f"*{SUFFIX}"):
        stem = path.name[: -len(SUFFIX)]
        if stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def create_segment(path: Path, *, sync: bool) -> int:
    """Start a new segment (its magic written); returns a file descriptor open for appending."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        os.write(fd, MAGIC)
        if sync:
            os.fsync(fd)
            sync_directory(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
