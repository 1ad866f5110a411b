"""``mainspring serve`` as a real process on a SQLite file, and the CLI's ``--server``.

A run started through the server with ``mainspring run --server URL`` reads back the same
through the server and, once the server stopped, from the store file itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from mainspring.cli import app
from mainspring.client import Client
from mainspring.events import EventKind
from mainspring.status import RunStatus

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("mainspring")
SUPPORT = "tests.cli_graphs:support"
REFUND = '{"text": "refund please", "amount": 250}'

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists(), reason="the mainspring console script is not installed"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAINSPRING_"):
            monkeypatch.delenv(name)


@contextmanager
def serving(store: Path | str, *args: str, log: Path) -> Iterator[str]:
    """``mainspring serve`` on ``store`` and a free port: its URL, as it printed it.

    Stopped with SIGTERM at the end of the block, which must be a clean exit (0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--store", str(store), "--port", "0", "--graph", SUPPORT,
             "--drain", "2", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # printed once it listens
            assert first.startswith("mainspring serve: http://127.0.0.1:"), (
                first,
                log.read_text(),
            )
            yield first.split()[2].rstrip("/")
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, log.read_text()
            assert "stopped; runs still going stay resumable" in rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded default (a SQLite file), and PostgreSQL: the same commands on both."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url_sync")
        return url
    return f"sqlite:///{tmp_path / 'served.db'}"


def test_a_run_started_through_the_server_reads_back_the_same(
    tmp_path: Path, store_url: str
) -> None:
    db = store_url
    broken = ("--graph", "tests.cli_graphs:broken")
    with serving(db, "--no-auth", *broken, log=tmp_path / "serve.log") as url:
        parked = ok(
            cli("run", "support", "--server", url, "-i", REFUND, "--run-id", "x1", "-t", "t1")
        )
        assert "waiting on 1 interrupt" in parked.stdout
        assert f"mainspring resume x1 --value '<JSON>' --server {url}" in parked.stdout

        # By its ref too; a ref the server does not serve says what it serves.
        done = ok(cli("run", SUPPORT, "--server", url, "-i", '{"text": "hi"}', "--json"))
        assert json.loads(done.stdout)["state"]["replies"] == ["re: hi"]
        wrong = cli("run", "tests.client_graphs:approvals", "--server", url)
        assert wrong.exit_code == 2 and "serves no graph from" in wrong.stderr
        failed = cli("run", "broken", "--server", url, "-i", '{"n": 3}')
        assert failed.exit_code == 1 and "failed in node 'explode'" in failed.stdout

        resumed = ok(
            cli("resume", "x1", "--server", url, "--value", '{"approved": true}', "--json")
        )
        assert json.loads(resumed.stdout)["state"]["replies"] == ["refund issued"]

        state = json.loads(ok(cli("state", "x1", "--server", url, "--at", "3", "--json")).stdout)
        assert (state["seq"], state["status"]) == (3, "running")
        assert "replay matches" in ok(cli("replay", "x1", "--server", url)).stdout
        with_graph = cli("state", "x1", "--server", url, "--graph", SUPPORT)
        assert with_graph.exit_code == 2 and "--graph applies to a local store" in with_graph.stderr

        shown = ok(cli("show", "x1", "--server", url))
        assert "effect_finished" in shown.stdout and "resumed" in shown.stdout
        followed = ok(cli("show", "x1", "--server", url, "--follow"))  # ended: nothing to follow
        assert followed.stdout == shown.stdout
        threads = ok(cli("threads", "--server", url, "--json")).stdout.splitlines()
        assert [(t["thread"], t["last_run_id"]) for t in map(json.loads, threads)] == [("t1", "x1")]
        remote_events = [
            json.loads(line)
            for line in ok(cli("show", "x1", "--server", url, "--json")).stdout.splitlines()
        ]
        listed = [
            json.loads(line)
            for line in ok(cli("runs", "--server", url, "--json")).stdout.splitlines()
        ]
        assert {r["run_id"]: r["status"] for r in listed}["x1"] == "finished"

        ok(cli("run", "support", "--server", url, "-i", REFUND, "--run-id", "x2"))
        assert "cancelled" in ok(cli("cancel", "x2", "--server", url)).stdout
        missing = cli("show", "nope", "--server", url)
        assert missing.exit_code == 3 and "no run with id 'nope'" in missing.stderr

    # The server is gone; the store file holds the same journal.
    local = ok(cli("show", "x1", "--store", str(db), "--json")).stdout.splitlines()
    assert [json.loads(line) for line in local] == remote_events
    runs = ok(cli("runs", "--store", str(db), "--json")).stdout.splitlines()
    assert {json.loads(line)["run_id"]: json.loads(line)["status"] for line in runs}["x2"] == (
        "cancelled"
    )


def test_a_parked_run_outlives_the_server_and_keys_are_required(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    with serving(db, "--no-auth", log=tmp_path / "first.log") as url:
        ok(cli("run", "support", "--server", url, "-i", REFUND, "--run-id", "p1"))

    made = ok(cli("keys", "create", "--store", str(db), "--tenant", "*", "--scopes", "admin"))
    key = made.stdout.strip()
    with serving(db, log=tmp_path / "second.log") as url:
        refused = cli("runs", "--server", url)
        assert refused.exit_code == 3 and "API key" in refused.stderr
        resumed = ok(
            cli("resume", "p1", "--server", url, "--api-key", key, "-v", '{"approved": false}')
        )
        assert "finished" in resumed.stdout and "refund declined" in resumed.stdout

    # The limits are the command's to set: a body past --max-body is refused, and a key
    # past --rate/--burst waits.
    args = ("--max-body", "2048", "--rate", "0.01", "--burst", "2")
    with serving(db, *args, log=tmp_path / "third.log") as url:
        auth = {"Authorization": f"Bearer {key}"}
        big = httpx.post(f"{url}/v1/runs", content=b"{" + b" " * 4096 + b"}", headers=auth)
        assert big.status_code == 413, big.text
        statuses = [httpx.get(f"{url}/v1/me", headers=auth).status_code for _ in range(4)]
        assert 429 in statuses, statuses


def test_no_auth_is_refused_off_loopback_and_unreachable_servers_are_one_line(
    tmp_path: Path,
) -> None:
    refused = cli("serve", "--host", "0.0.0.0", "--no-auth", "--store", str(tmp_path / "x.db"))
    assert refused.exit_code == 2 and "--no-auth on --host 0.0.0.0" in refused.stderr
    assert not (tmp_path / "x.db").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = cli("serve", "--store", str(tmp_path / "y.db"), "--no-auth", "--port", port)
    assert busy.exit_code == 3
    assert busy.stderr.splitlines()[-1].startswith(
        f"error: the server did not start on 127.0.0.1:{port}"
    )
    down = cli("runs", "--server", "http://127.0.0.1:9")
    assert down.exit_code == 3
    assert "cannot reach the Mainspring server at http://127.0.0.1:9" in down.stderr
    assert down.stderr.count("\n") == 1


def test_a_run_going_when_the_server_stops_is_finished_by_the_next(tmp_path: Path) -> None:
    """SIGTERM with --drain 0: the live run is left as its journal stands, resumable; the
    next server on the store takes it over (crash recovery) and finishes it, each step once."""
    db = tmp_path / "handover.db"
    ticker = ("--graph", "tests.stream_graphs:ticker", "--drain", "0")
    with serving(db, "--no-auth", *ticker, log=tmp_path / "first.log") as url, Client(url) as ms:
        run = ms.start("ticker", {"limit": 150, "delay": 0.01})
        for event in ms.stream(run.run_id):
            if event.seq >= 10:
                break  # going: stop the server under it
    (left,) = map(json.loads, ok(cli("runs", "--store", str(db), "--json")).stdout.splitlines())
    assert (left["status"], left["orphaned"]) == ("running", True)  # resumable, held by no one
    with serving(db, "--no-auth", *ticker, log=tmp_path / "second.log") as url, Client(url) as ms:
        outcome = ms.wait(run.run_id, until="end")
        assert (outcome.status, outcome.state["n"]) == (RunStatus.FINISHED, 150)
        events = ms.events(run.run_id)
    finished = [e for e in events if e.kind is EventKind.STEP_FINISHED]
    assert [e.data["step"] for e in finished] == list(range(150))


def test_stdout_has_only_the_command_s_lines_the_access_log_goes_to_stderr(
    tmp_path: Path,
) -> None:
    """Scripts read the URL from stdout's first line and may stop reading: were the access
    log on stdout too, the pipe would fill and freeze the server."""
    db, log = tmp_path / "quiet.db", tmp_path / "quiet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--store", str(db), "--port", "0", "--no-auth",
             "--graph", SUPPORT, "--drain", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            url = first.split()[2].rstrip("/")
            with httpx.Client(base_url=url, timeout=30) as client:
                for _ in range(20):
                    assert client.get("/v1/runs").status_code == 200
                assert client.get("/v1/nope").status_code == 404
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    lines = (first + rest).splitlines()
    assert lines[0].startswith("mainspring serve: http://127.0.0.1:")
    assert lines[-1].startswith("mainspring serve: stopped")
    # The startup block's continuation lines are indented; nothing else is there.
    assert all(line.startswith(("mainspring serve: ", "  ")) for line in lines), lines
    assert '"GET /v1/runs HTTP/1.1" 200' in log.read_text()  # the access log: on stderr


def test_a_second_signal_stops_the_drain_at_once_runs_stay_resumable(tmp_path: Path) -> None:
    """--drain 600 with a run going: SIGTERM, then SIGINT once it is stopping: the server
    exits (exit 0) long before the drain would have ended; the run is left resumable."""
    db, log = tmp_path / "hurry.db", tmp_path / "hurry.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--store", str(db), "--port", "0", "--no-auth",
             "--graph", "tests.stream_graphs:ticker", "--drain", "600"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[2].rstrip("/")
            with Client(url) as ms:
                run = ms.start("ticker", {"limit": 100_000, "delay": 0.01})
                for event in ms.stream(run.run_id):
                    if event.seq >= 5:
                        break  # going
            proc.send_signal(signal.SIGTERM)
            # Once it is stopping (its log says so), a second signal: no more waiting.
            for _ in range(3000):  # polls the log, up to ~30 s
                if "Shutting down" in log.read_text() or proc.poll() is not None:
                    break
                time.sleep(0.01)
            assert "Shutting down" in log.read_text(), log.read_text()
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=120)  # the drain alone would last 600 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "stopped at once (a second signal: no drain)" in rest
    (left,) = map(json.loads, ok(cli("runs", "--store", str(db), "--json")).stdout.splitlines())
    assert (left["status"], left["orphaned"]) == ("running", True)  # resumable, held by no one


def test_queue_mode_off_postgresql_and_a_rate_limit_store_not_redis_are_refused(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "q.db")
    queued = cli("serve", "--store", db, "--no-auth", "--queue", "default")
    assert queued.exit_code == 2, queued.stderr
    assert "PostgreSQL" in queued.stderr and "--queue" in queued.stderr
    not_redis = cli("serve", "--store", db, "--no-auth", "--rate-limit-store", "http://x")
    assert not_redis.exit_code == 2 and "give a Redis URL" in not_redis.stderr
