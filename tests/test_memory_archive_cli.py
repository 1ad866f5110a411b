"""``mainspring memory archive find|get|compact|promote`` and ``mainspring memory tier``.

Promotion and tiering move sessions to and from session memory on Redis (the one
running here): skipped without it, failed under ``MAINSPRING_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner, Result

from mainspring.cli import app
from mainspring.memory.archive import ArchiveRecord, LocalArchive
from tests.conftest import service_missing
from tests.test_session_memory import REDIS_URL, redis_unavailable


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture
def archive_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MAINSPRING_ARCHIVE", raising=False)
    monkeypatch.delenv("MAINSPRING_TENANT", raising=False)

    async def fill() -> None:
        async with LocalArchive(tmp_path) as archive:
            await archive.put([
                ArchiveRecord(f"r{i}", "session" if i % 2 else "item", "acme", f"t{i % 2}",
                              1_767_225_600.0 + i * 86_400, 1_800_000_000.0, {"i": i})
                for i in range(6)
            ])  # fmt: skip
            await archive.remove(["r5"], tenant="acme")

    anyio.run(fill)
    return str(tmp_path)


def test_find_get_and_compact(archive_dir: str) -> None:
    found = ok(
        cli("memory", "archive", "find", "-a", archive_dir, "--tenant", "acme", "--thread", "t1")
    )
    assert "r1  session  thread=t1  last active 2026-01-02T00:00:00+00:00" in found.stdout
    assert "r3" in found.stdout and "r5" not in found.stdout and "2 record(s)" in found.stdout

    since = ok(cli("memory", "archive", "find", "-a", archive_dir, "--tenant", "acme",
                   "--since", "2026-01-03", "--until", "1767657600", "--kind", "item", "--json"))  # fmt: skip
    assert [json.loads(line)["id"] for line in since.stdout.splitlines()] == ["r2", "r4"]
    assert "0 record(s)" in ok(cli("memory", "archive", "find", "-a", archive_dir)).stdout

    record = json.loads(ok(cli("memory", "archive", "get", "r2", "-a", archive_dir,
                               "--tenant", "acme")).stdout)  # fmt: skip
    assert record["data"] == {"i": 2} and record["thread"] == "t0"
    missing = ok(cli("memory", "archive", "get", "r5", "-a", archive_dir, "--tenant", "acme"), 3)
    assert "no archived record 'r5'" in missing.stderr

    compacted = ok(cli("memory", "archive", "compact", "-a", archive_dir)).stdout
    assert "5 record(s) kept" in compacted


def test_bad_input_exits_2_with_what_to_fix(archive_dir: str) -> None:
    bad_kind = ok(cli("memory", "archive", "find", "-a", archive_dir, "--kind", "blob"), 2)
    assert "--kind 'blob': use session or item" in bad_kind.stderr
    bad_time = ok(cli("memory", "archive", "find", "-a", archive_dir, "--since", "yesterday"), 2)
    assert "ISO 8601" in bad_time.stderr
    after = ok(cli("memory", "archive", "find", "-a", archive_dir, "--after", "nope"), 2)
    assert "previous page" in after.stderr
    no_session = ok(cli("memory", "tier", "-a", archive_dir, "--dry-run"), 2)
    assert "--session redis://" in no_session.stderr


def test_tier_and_promote_move_sessions_on_redis(archive_dir: str) -> None:
    if (reason := redis_unavailable()) is not None:
        service_missing(reason)
    from mainspring.memory.session import open_session_memory

    tenant = f"cli-{uuid.uuid4().hex[:8]}"  # keys of this test only, on the shared server

    async def write() -> None:
        async with open_session_memory(REDIS_URL) as sessions:
            await sessions.set("support-7", "order", "A-7", tenant=tenant)

    async def read() -> object:
        async with open_session_memory(REDIS_URL) as sessions:
            return await sessions.get("support-7", "order", tenant=tenant)

    anyio.run(write)
    base = ("-a", archive_dir, "--session", REDIS_URL, "--tenant", tenant)
    dry = ok(cli("memory", "tier", *base, "--session-idle", "0", "--dry-run"))
    assert "would move session session:support-7@" in dry.stdout and anyio.run(read) == "A-7"
    moved = ok(cli("memory", "tier", *base, "--session-idle", "0", "--json"))
    (line,) = moved.stdout.splitlines()
    assert json.loads(line)["reason"] == "session_idle" and anyio.run(read) is None

    async def reuse() -> None:  # the thread is used again before the promotion
        async with open_session_memory(REDIS_URL) as sessions:
            await sessions.set("support-7", "order", "B-8", tenant=tenant)
            await sessions.append("support-7", "new", tenant=tenant)

    async def everything() -> tuple[dict[str, object], list[object]]:
        async with open_session_memory(REDIS_URL) as sessions:
            snap = await sessions.snapshot("support-7", tenant=tenant)
            return snap.values, snap.messages

    async def write_more() -> None:
        async with open_session_memory(REDIS_URL) as sessions:
            await sessions.set("support-7", "status", "open", tenant=tenant)
            await sessions.append("support-7", "old", tenant=tenant)

    record_id = json.loads(line)["id"]
    promote = ("memory", "archive", "promote", record_id, "-a", archive_dir,
               "--session", REDIS_URL, "--tenant", tenant)  # fmt: skip
    assert "promoted session" in ok(cli(*promote)).stdout
    assert anyio.run(read) == "A-7"
    assert "no archived record" in ok(cli(*promote), 3).stderr  # gone from the archive now

    # Promoting into a thread that was reused merges: nothing current is lost.
    anyio.run(write_more)
    moved = ok(cli("memory", "tier", *base, "--session-idle", "0", "--json"))
    again = ("memory", "archive", "promote", json.loads(moved.stdout)["id"], "-a",
             archive_dir, "--session", REDIS_URL, "--tenant", tenant)  # fmt: skip
    anyio.run(reuse)
    assert "promoted session" in ok(cli(*again)).stdout
    assert anyio.run(everything) == ({"order": "B-8", "status": "open"}, ["old", "new"])
    anyio.run(_clear, tenant)


async def _clear(tenant: str) -> None:
    from mainspring.memory.session import open_session_memory

    async with open_session_memory(REDIS_URL) as sessions:
        await sessions.clear("support-7", tenant=tenant)
