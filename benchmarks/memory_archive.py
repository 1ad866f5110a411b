"""The cold archive (``mainspring.memory.archive.LocalArchive``): write throughput, get and
find latency at 100,000 records, and size, against one SQLite table holding the same
records as JSON (the obvious alternative); and the codecs the archive could use.

    python benchmarks/memory_archive.py [--quick] [--json] [--records N]

Rows: ARCH-write (records/s, batches of 256, each synced: fsync / SQLite FULL; batches
alternate between the two, so they see the same noise), ARCH-get (p99 of a get by id
through the async API, random ids, gets alternating; both on the event loop), ARCH-find
(p99 of a page of 20 of one thread; both in a worker thread), ARCH-size (bytes on disk / raw JSON), and ARCH-codec-* (ratio, compression
and decompression speed of each record on its own: zstd-3, the archive's choice; zlib-6;
lzma-6). ``--quick``: 20,000 records.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from mainspring.memory.archive import ArchiveRecord, LocalArchive

from harness import Result, Settings
from report import print_json, print_table

BATCH = 256
_WORDS = " ".join(
    p.read_text() for p in (Path(__file__).parent.parent / "docs").glob("*.md")
).split()


def _text(rng: random.Random, n: int) -> str:
    start = rng.randrange(len(_WORDS) - n)
    return " ".join(_WORDS[start : start + n])


def make_records(n: int, seed: int = 7) -> list[ArchiveRecord]:
    """Nine items (facts, ~400 B of JSON) to one session snapshot (4-30 messages, ~8 KB)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        thread = f"thread-{i % (n // 20 or 1)}"
        if i % 10 == 0:
            messages = [
                {"role": ("user", "assistant")[t % 2], "content": _text(rng, rng.randint(10, 120))}
                for t in range(rng.randint(4, 30))
            ]
            data: Any = {"thread": thread, "tenant": "acme", "values": {"plan": _text(rng, 20)},
                         "messages": messages, "shared": {}, "last_active": 1.7e9 + i}  # fmt: skip
            kind = "session"
        else:
            data = {"id": f"item-{i}", "text": _text(rng, rng.randint(8, 60)),
                    "scope": {"tenant": "acme", "user": f"u{i % 50}", "agent": None},
                    "metadata": {"topic": rng.choice(["billing", "travel", "code"])},
                    "recorded_at": 1.7e9 + i, "updated_at": 1.7e9 + i}  # fmt: skip
            kind = "item"
        records.append(ArchiveRecord(f"r{i:07d}", kind, "acme", thread, 1.7e9 + i, 1.8e9, data))  # type: ignore[arg-type]
    return records


class SQLiteTable:
    """The anchor: one table, the record's JSON in a column, WAL + synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE records (tenant TEXT, id TEXT, kind TEXT, thread TEXT, time REAL, "
            "data TEXT, PRIMARY KEY (tenant, id)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX by_thread ON records (tenant, thread, time, id)")
        self.encode = msgspec.json.Encoder().encode

    def put(self, records: list[ArchiveRecord]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
            [(r.tenant, r.id, r.kind, r.thread, r.time, self.encode(r.data).decode())
             for r in records],
        )  # fmt: skip
        self.db.execute("COMMIT")

    def get(self, id_: str) -> Any:
        row = self.db.execute(
            "SELECT data FROM records WHERE tenant = 'acme' AND id = ?", (id_,)
        ).fetchone()
        return json.loads(row[0])

    def find(self, thread: str) -> list[Any]:
        rows = self.db.execute(
            "SELECT data FROM records WHERE tenant = 'acme' AND thread = ? ORDER BY time, id "
            "LIMIT 20",
            (thread,),
        )
        return [json.loads(r[0]) for r in rows]


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


async def measure(n: int, lookups: int, workdir: Path) -> list[Result]:
    records = make_records(n)
    raw = sum(len(msgspec.json.encode(r)) for r in records)
    archive = LocalArchive(workdir / "archive")
    table = SQLiteTable(workdir / "table.db")
    ours: list[float] = []
    theirs: list[float] = []
    for k, start in enumerate(range(0, n, BATCH)):
        chunk = records[start : start + BATCH]
        for side in (0, 1) if k % 2 else (1, 0):
            t0 = time.perf_counter()
            if side == 0:
                await archive.put(chunk)
                ours.append(time.perf_counter() - t0)
            else:
                await anyio.to_thread.run_sync(table.put, chunk)
                theirs.append(time.perf_counter() - t0)
    write = Result("ARCH-write", n / sum(ours), n / sum(theirs), "records/s",
                   higher_is_better=True, extra={"records": n, "batch": BATCH,
                   "mb_per_s": raw / sum(ours) / 1e6})  # fmt: skip

    rng = random.Random(1)
    get_ours: list[float] = []
    get_theirs: list[float] = []
    find_ours: list[float] = []
    find_theirs: list[float] = []
    for i in range(lookups):
        id_ = records[rng.randrange(n)].id
        thread = f"thread-{rng.randrange(n // 20 or 1)}"
        for side in (0, 1) if i % 2 else (1, 0):
            t0 = time.perf_counter()
            if side == 0:
                assert await archive.get(id_, tenant="acme") is not None
                get_ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await archive.find(tenant="acme", thread=thread, limit=20)
                find_ours.append(time.perf_counter() - t0)
            else:
                table.get(id_)  # on the loop, as the archive's get
                get_theirs.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await anyio.to_thread.run_sync(table.find, thread)
                find_theirs.append(time.perf_counter() - t0)
    get = Result("ARCH-get", p99(get_ours) * 1e6, p99(get_theirs) * 1e6, "us p99",
                 extra={"p50_us": statistics.median(get_ours) * 1e6, "records": n})  # fmt: skip
    find = Result("ARCH-find", p99(find_ours) * 1e6, p99(find_theirs) * 1e6, "us p99",
                  extra={"p50_us": statistics.median(find_ours) * 1e6, "page": 20})  # fmt: skip
    await archive.aclose()
    table.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    table.db.close()
    ours_bytes = sum(p.stat().st_size for p in (workdir / "archive").rglob("*") if p.is_file())
    segments = sum(p.stat().st_size for p in (workdir / "archive" / "segments").iterdir())
    theirs_bytes = (workdir / "table.db").stat().st_size
    size = Result("ARCH-size", ours_bytes / raw, theirs_bytes / raw, "bytes / raw JSON",
                  extra={"raw_mb": raw / 1e6, "segments_ratio": raw / segments,
                         "index_mb": (ours_bytes - segments) / 1e6})  # fmt: skip
    return [write, get, find, size]


def codecs(records: list[ArchiveRecord]) -> list[Result]:
    import lzma

    import zstandard

    blobs = [msgspec.json.encode(r.data) for r in records]
    raw = sum(map(len, blobs))
    zc, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]
    candidates: dict[str, Codec] = {
        "zstd-3": (zc.compress, zd.decompress),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "lzma-6": (lambda b: lzma.compress(b, preset=6), lzma.decompress),
    }
    results: list[Result] = []
    speed: dict[str, float] = {}
    for name, (compress, decompress) in candidates.items():
        t0 = time.process_time()
        packed = [compress(b) for b in blobs]
        t1 = time.process_time()
        for b in packed:
            decompress(b)
        t2 = time.process_time()
        speed[name] = raw / (t1 - t0) / 1e6
        results.append(Result(f"ARCH-codec-{name}", raw / sum(map(len, packed)), None,
                              "ratio", higher_is_better=True,
                              extra={"compress_mb_s": speed[name],
                                     "decompress_mb_s": raw / (t2 - t1) / 1e6}))  # fmt: skip
    return results


async def run(settings: Settings) -> list[Result]:
    """The suite's entry (``benchmarks/run.py --only W14-archive``)."""
    n = 20_000 if settings.quick else 100_000
    results = await measure(n, 2_000 if settings.quick else 10_000, settings.workdir)
    return results + codecs(make_records(2_000 if settings.quick else 5_000, seed=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--records", type=int)
    args = parser.parse_args()
    n = args.records or (20_000 if args.quick else 100_000)
    lookups = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        results = anyio.run(measure, n, lookups, Path(tmp))
    results += codecs(make_records(2_000 if args.quick else 5_000, seed=3))
    if args.json:
        for result in results:
            print_json(result)
    else:
        print_table(results, title="Cold archive: LocalArchive against one SQLite table",
                    context=f"{n:,} records (1 in 10 a session of ~8 KB, the rest items)")  # fmt: skip


if __name__ == "__main__":
    main()
