"""The network-namespace harness (tests/netns.py) itself: hosts reach PostgreSQL through
the relay, a partition cuts a host off until healed, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests import netns
from tests.conftest import require_postgres
from tests.netns import _ip, hosts

pytestmark = pytest.mark.postgres

# Connects to PostgreSQL at argv[1] and prints what it sees; exits 1 if it cannot in 3 s.
PROBE = """
import asyncio, sys, asyncpg
async def main():
    try:
        conn = await asyncpg.connect(sys.argv[1], timeout=3)
    except (OSError, asyncio.TimeoutError) as exc:
        print("unreachable", type(exc).__name__)
        sys.exit(1)
    print(await conn.fetchval("SELECT inet_client_addr() IS NOT NULL OR true"), flush=True)
    await conn.close()
asyncio.run(main())
"""


def test_hosts_reach_postgres_through_the_relay_until_partitioned() -> None:
    require_postgres()
    with hosts(2) as lab:
        url = lab.postgres_url("test")
        for host in lab.hosts:
            assert lab.run(host, [sys.executable, "-c", PROBE, url]).strip() == "True"
        # A host cannot reach the machine's loopback: the relay is the only way in.
        with pytest.raises(RuntimeError, match="unreachable"):
            lab.run(
                lab.hosts[0],
                [sys.executable, "-c", PROBE, "postgresql://postgres@127.0.0.1:5432/test"],
            )
        lab.partition(lab.hosts[0])
        with pytest.raises(RuntimeError, match="unreachable"):
            lab.run(lab.hosts[0], [sys.executable, "-c", PROBE, url])
        assert lab.run(lab.hosts[1], [sys.executable, "-c", PROBE, url]).strip() == "True"
        lab.heal(lab.hosts[0])
        assert lab.run(lab.hosts[0], [sys.executable, "-c", PROBE, url]).strip() == "True"

        sleeper = lab.spawn(lab.hosts[1], [sys.executable, "-c", "import time; time.sleep(600)"])
        lab.kill(sleeper, signal.SIGKILL)
        assert sleeper.proc.returncode == -signal.SIGKILL
        names = [host.netns for host in lab.hosts]
        bridge = lab.bridge
    listed = _ip("netns", "list")
    assert not any(name in listed for name in names)
    assert bridge not in _ip("link", "show")


def test_a_failing_test_leaves_nothing_behind() -> None:
    names: list[str] = []
    with pytest.raises(ZeroDivisionError), hosts(1, postgres=None) as lab:
        names.append(lab.hosts[0].netns)
        lab.spawn(lab.hosts[0], [sys.executable, "-c", "import time; time.sleep(600)"])
        1 / 0  # noqa: B018
    assert names and names[0] not in _ip("netns", "list")


def test_not_root_skips_even_when_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("MAINSPRING_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.skip.Exception, match="need root"), hosts(1):
        pass


def test_root_that_cannot_make_namespaces_fails_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: as another user, the harness skips before trying")

    def broken(*args: object) -> None:
        raise RuntimeError("`ip netns add` failed: Operation not permitted")

    monkeypatch.setattr(netns, "_build", broken)
    monkeypatch.setenv("MAINSPRING_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="Operation not permitted"), hosts(1):
        pass
    monkeypatch.setenv("MAINSPRING_REQUIRE_SERVICES", "0")
    with pytest.raises(pytest.skip.Exception, match="cannot make network namespaces"), hosts(1):
        pass


def test_a_killed_runs_leftovers_are_swept() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (ip netns add)")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now: the "killed test run"
    name, bridge = f"msnet-{gone.pid}-0-0", f"msb{gone.pid}l0"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", bridge, "type", "bridge")
        _ip("link", "set", bridge, "alias", f"msnet-{gone.pid}-0")
        netns.sweep_stale()
        assert name not in _ip("netns", "list")
        assert bridge not in _ip("link", "show")
    finally:
        _ip("netns", "del", name, check=False)
        _ip("link", "del", bridge, check=False)
