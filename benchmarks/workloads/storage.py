"""W5: a 200-turn chat appending a 1 KB message per step, durable on SQLite.

Store size on disk after closing (the database file plus any ``-wal`` file)
divided by the payload (200 x 1 KB). Mainspring: ``append`` reducer,
``durability="sync"``; LangGraph: ``Annotated[list, operator.add]`` on
``SqliteSaver`` (WAL + FULL), ``recursion_limit`` raised above 200. The
floor, measured alongside: the 200 messages as rows of a plain SQLite table.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from mainspring import Runtime

from graphs import CHAT_TURNS, MESSAGE, lg_chat, lg_config, ms_chat
from harness import Result, Settings, at_most
from workloads.durable import lg_sqlite

PAYLOAD = CHAT_TURNS * len(MESSAGE.encode())


def store_size(db: Path) -> int:
    """Bytes on disk of a closed SQLite store: the file and its write-ahead log, if any."""
    wal = db.with_name(db.name + "-wal")
    return sum(p.stat().st_size for p in (db, wal) if p.exists())


def _check(final: dict[str, list[str]], side: str) -> None:
    got = len(final["messages"])
    if got != CHAT_TURNS or any(m != MESSAGE for m in final["messages"]):
        raise AssertionError(f"{side}: the chat ended with {got} messages, expected {CHAT_TURNS}")


async def mainspring_size(db: Path) -> tuple[int, float]:
    start = time.perf_counter()
    async with Runtime.open(f"sqlite:///{db}", durability="sync") as rt:
        _check(await rt.run(ms_chat(), {"messages": []}), "mainspring")
    return store_size(db), time.perf_counter() - start


def langgraph_size(db: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with lg_sqlite(db, "FULL") as (saver, _):
        final = lg_chat(saver).invoke(
            {"messages": []}, lg_config(recursion_limit=10 * CHAT_TURNS), durability="sync"
        )
        _check(final, "langgraph")
    return store_size(db), time.perf_counter() - start


def raw_size(db: Path) -> int:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
        for _ in range(CHAT_TURNS):
            conn.execute("INSERT INTO messages (body) VALUES (?)", (MESSAGE,))
    return store_size(db)


async def run(settings: Settings) -> list[Result]:
    work = settings.workdir / "w5"
    work.mkdir()
    ms, ms_s = await mainspring_size(work / "ms.db")
    lg, lg_s = langgraph_size(work / "lg.db")
    floor = raw_size(work / "raw.db")
    result = Result(
        "W5",
        ms / PAYLOAD,
        lg / PAYLOAD,
        "x payload",
        extra={
            "floor": floor / PAYLOAD,
            "vs_floor": ms / floor,
            "payload_bytes": PAYLOAD,
            "mainspring_bytes": ms,
            "anchor_bytes": lg,
            "mainspring_seconds": ms_s,
            "anchor_seconds": lg_s,
        },
    )
    result.checks = [at_most(result.mainspring, 2, "<= 2x payload")]
    return [result]
