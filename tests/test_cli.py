"""The ``mainspring`` command line, through typer's CliRunner and as a real console script."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mainspring.cli import app

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "tests.cli_graphs:support"
REFUND = '{"text": "refund please", "amount": 250}'


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MAINSPRING_STORE", raising=False)
    monkeypatch.delenv("MAINSPRING_DEBUG", raising=False)
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(*args: str, store: str | None = None, input: str | None = None) -> Result:
    argv = [*args, "--store", store] if store is not None else list(args)
    return CliRunner().invoke(app, argv, input=input)


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def one_error_line(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and exactly one ``error: ...`` line on stderr."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_json(store: str, *args: str) -> dict[str, Any]:
    result = cli("run", *args, "--json", store=store)
    assert result.exit_code in (0, 1), (result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- run, resume ---------------------------------------------------------------------


def test_run_to_completion_shows_progress_and_final_state(store: str) -> None:
    out = ok(
        cli("run", SUPPORT, "--input", '{"text": "hello"}', "--run-id", "r1", store=store)
    ).stdout
    for expected in (
        "▶ run started",
        "● classify       step 0 started",
        "effect detect_intent …",
        'effect detect_intent → "other"',
        'emitted {"intent":"other"}',
        '✓ classify       intent="other"',
        "● answer",
        "■ finished",
        "✓ run r1 finished (seq 9)",
        '"re: hello"',
    ):
        assert expected in out, out
    state = json.loads(out[out.index("final state:") + len("final state:") :])
    assert state == {"text": "hello", "intent": "other", "replies": ["re: hello"]}


def test_run_json_prints_only_the_outcome(store: str) -> None:
    data = run_json(store, SUPPORT, "--input", '{"text": "hi"}', "--run-id", "j1", "--thread", "t")
    assert data["run_id"] == "j1"
    assert data["status"] == "finished"
    assert data["state"]["replies"] == ["re: hi"]
    assert data["interrupts"] == [] and data["error"] is None


def test_run_parks_on_interrupt_then_resume_with_value(store: str) -> None:
    parked = ok(cli("run", SUPPORT, "--input", REFUND, "--run-id", "p1", store=store)).stdout
    assert '⏸ refund         interrupt 1.0.0: {"approve_refund":250}' in parked
    assert "run p1 is waiting on 1 interrupt" in parked
    assert f"mainspring resume p1 --value '<JSON>' --store {store}" in parked

    one_error_line(cli("resume", "p1", store=store), 2, "waiting on interrupt 1.0.0", "--value")

    resumed = ok(cli("resume", "p1", "--value", '{"approved": true}', store=store)).stdout
    assert '1.0.0 ← {"approved":true}' in resumed
    assert "step 1 started, rerun" in resumed
    assert "classify" not in resumed  # only what happened after the resume
    assert "✓ run p1 finished" in resumed and '"refund issued"' in resumed

    one_error_line(cli("resume", "p1", "--value", "1", store=store), 3, "nothing to resume")


def test_resume_with_several_pending_interrupts_names_the_interrupt_option(store: str) -> None:
    parked = run_json(store, "tests.cli_graphs:pair", "-i", "{}", "--run-id", "two")
    assert [i["id"] for i in parked["interrupts"]] == ["0.0.0", "0.1.0"]
    example = f"mainspring resume two --interrupt 0.0.0 --value '<JSON>' --store {store}"
    for value in ([], ["--value", "true"]):  # with or without an answer, which one is unclear
        one_error_line(
            cli("resume", "two", *value, store=store),
            2,
            'waiting on 2 interrupts: 0.0.0 (node ask_left): {"side":"left"}; 0.1.0 (node',
            "answer one at a time with --interrupt ID --value JSON",
            example,
        )
    one_error_line(
        cli("resume", "two", "--interrupt", "0.9.0", "--value", "1", store=store),
        2,
        "run 'two' has no pending interrupt '0.9.0'; pending: 0.0.0, 0.1.0; name one with --interrupt",
    )
    one_error_line(
        cli("resume", "two", "--interrupt", "0.1.0", store=store),
        2,
        "waiting on interrupt 0.1.0 (node ask_right)",
        "answer it with --value JSON",
    )
    assert "interrupt_id=" not in cli("resume", "two", store=store).stderr

    half = json.loads(
        ok(cli("resume", "two", "--interrupt", "0.1.0", "-v", '"no"', "--json", store=store)).stdout
    )
    assert half["status"] == "interrupted" and [i["id"] for i in half["interrupts"]] == ["0.0.0"]
    done = json.loads(ok(cli("resume", "two", "-v", '"yes"', "--json", store=store)).stdout)
    assert done["status"] == "finished"
    assert sorted(done["state"]["answers"]) == ["left=yes", "right=no"]


def test_resume_json_and_value_from_stdin(store: str) -> None:
    run_json(store, SUPPORT, "--input", REFUND, "--run-id", "p2")
    result = ok(cli("resume", "p2", "--value", "@-", "--json", store=store, input="false"))
    data = json.loads(result.stdout)
    assert data["status"] == "finished"
    assert data["state"]["replies"] == ["refund declined"]


def test_cancel_a_parked_run(store: str) -> None:
    run_json(store, SUPPORT, "--input", REFUND, "--run-id", "cx")
    assert "■ run cx cancelled" in ok(cli("cancel", "cx", store=store)).stdout
    assert json.loads(ok(cli("runs", "--json", store=store)).stdout)["status"] == "cancelled"
    one_error_line(cli("cancel", "cx", store=store), 3, "already cancelled")
    one_error_line(cli("resume", "cx", "--value", "1", store=store), 3, "nothing to resume")


def _journal(store: str, run_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in ok(cli("show", run_id, "--json", store=store)).stdout.splitlines()
    ]


def test_resume_fork_and_cancel_record_who_acted(store: str) -> None:
    """Administrative actions through the CLI name someone in the journal (the audit
    trail's "who"): --actor, or the operating-system user at this host."""
    run_json(store, SUPPORT, "--input", REFUND, "--run-id", "w1")
    ok(cli("resume", "w1", "--value", "true", "--actor", "ann@support", store=store))
    resumed = [e for e in _journal(store, "w1") if e["kind"] == "resumed"]
    assert resumed[-1]["data"]["actor"] == "ann@support"
    run_json(store, SUPPORT, "--input", REFUND, "--run-id", "w2")
    ok(cli("cancel", "w2", store=store))
    cancelled = [e for e in _journal(store, "w2") if e["kind"] == "cancelled"]
    who = cancelled[-1]["data"]["actor"]
    assert "@" in who and who.split("@", 1)[1] == socket.gethostname()
    fork = ("fork", "w1", "--at", "1", "--run-id", "w3", "--effects", "reuse", "--actor", "bob")
    ok(cli(*fork, "--json", store=store))
    started = _journal(store, "w3")[0]
    assert started["data"]["forked_from"]["actor"] == "bob"


def test_input_from_file(store: str, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"text": "from a file"}')
    data = run_json(store, SUPPORT, "--input", f"@{path}")
    assert data["state"]["replies"] == ["re: from a file"]


def test_failed_run_exits_1_with_its_error(store: str) -> None:
    result = ok(
        cli("run", "tests.cli_graphs:broken", "-i", '{"n": 3}', "--run-id", "b1", store=store), 1
    )
    assert "step_failed" not in result.stdout  # the progress speaks human
    assert "attempt 1: ValueError: cannot handle n=3; no retry" in result.stdout
    assert "✗ run b1 failed in node 'explode': ValueError: cannot handle n=3" in result.stdout
    assert "mainspring show b1 --store" in result.stdout


def test_existing_run_id_starts_nothing(store: str) -> None:
    run_json(store, SUPPORT, "--input", '{"text": "a"}', "--run-id", "same")
    out = ok(
        cli("run", SUPPORT, "--input", '{"text": "a"}', "--run-id", "same", store=store)
    ).stdout
    assert "run same already exists; nothing started" in out
    assert '"re: a"' in out
    # The same id with another input is a different request: refused, not the old run.
    refused = ok(
        cli("run", SUPPORT, "--input", '{"text": "b"}', "--run-id", "same", store=store), 3
    )
    assert "run id 'same' is taken by a run started with a different input" in refused.stderr


# -- reading -------------------------------------------------------------------------


def test_runs_lists_newest_first_and_filters(store: str) -> None:
    run_json(store, SUPPORT, "-i", '{"text": "hi"}', "--run-id", "done", "--thread", "a")
    run_json(store, SUPPORT, "-i", REFUND, "--run-id", "parked", "--thread", "b")
    run_json(store, "tests.cli_graphs:broken", "-i", "{}", "--run-id", "bad", "--durability", "off")

    def ids(*args: str) -> list[str]:
        out = ok(cli("runs", "--json", *args, store=store)).stdout
        return [json.loads(line)["run_id"] for line in out.splitlines()]

    assert ids() == ["bad", "parked", "done"]
    assert ids("--status", "interrupted") == ["parked"]
    assert ids("--status", "FAILED", "--status", "finished") == ["bad", "done"]
    assert ids("--graph", "broken") == ["bad"]
    assert ids("--thread", "a") == ["done"]
    assert ids("--limit", "1") == ["bad"]
    record = json.loads(ok(cli("runs", "--json", "-g", "broken", store=store)).stdout)
    assert record["durability"] == "off" and record["orphaned"] is False

    table = ok(cli("runs", store=store)).stdout.splitlines()
    assert table[0].split() == ["run", "graph", "thread", "status", "created", "updated", "seq"]
    assert table[2].split()[:4] == ["parked", "support", "b", "interrupted"]
    assert table[2].split()[-1] == "8"

    threads = ok(cli("threads", store=store)).stdout
    assert "parked" in threads and "interrupted" in threads
    assert ok(cli("runs", "--status", "cancelled", store=store)).stdout.strip() == "no runs match"


def test_show_prints_a_timeline(store: str) -> None:
    run_json(store, SUPPORT, "-i", REFUND, "--run-id", "s1", "--thread", "t1")
    parked = ok(cli("show", "s1", store=store)).stdout
    assert "run s1  graph support  status interrupted  thread t1" in parked
    assert "mainspring resume s1 --value" in parked  # a parked run says how to continue
    ok(cli("resume", "s1", "-v", "true", store=store))

    lines = ok(cli("show", "s1", store=store)).stdout.splitlines()
    assert lines[2].split() == ["seq", "time", "kind", "step", "node", "summary"]
    rows = {int(line.split()[0]): line for line in lines[3:]}
    assert sorted(rows) == list(range(1, 13))
    assert "run_started" in rows[1] and 'input {"text":"refund please","amount":250}' in rows[1]
    assert rows[4].split()[2:5] == ["effect_finished", "0.0", "classify"]
    assert rows[4].endswith('effect detect_intent → "refund"')
    assert rows[8].endswith('interrupt 1.0.0: {"approve_refund":250}')
    assert rows[9].endswith("1.0.0 ← true")
    assert rows[11].endswith('approved=true, replies=["refund issued"]')
    assert rows[12].split()[2] == "finished"
    assert all(line == line.rstrip() for line in lines)

    events = [
        json.loads(line)
        for line in ok(cli("show", "s1", "--json", store=store)).stdout.splitlines()
    ]
    assert [e["seq"] for e in events] == list(range(1, 13))
    assert events[3]["kind"] == "effect_finished" and events[3]["data"]["result"] == "refund"


def test_state_at_a_sequence_number(store: str) -> None:
    run_json(store, SUPPORT, "-i", REFUND, "--run-id", "st")
    view = json.loads(ok(cli("state", "st", "--at", "7", "--json", store=store)).stdout)
    assert view["values"]["intent"] == "refund" and view["next"] == ["refund"]
    now = ok(cli("state", "st", store=store)).stdout
    assert "interrupted" in now and "interrupt 1.0.0 (node refund)" in now
    one_error_line(cli("state", "st", "--at", "99", store=store), 3, "sequence numbers 1 to 8")


def test_fork_runs_again_from_a_sequence_number(store: str) -> None:
    run_json(store, SUPPORT, "-i", REFUND, "--run-id", "orig")
    ok(cli("resume", "orig", "--value", "true", store=store))

    out = ok(cli("fork", "orig", "--at", "7", "--run-id", "alt", store=store)).stdout
    assert "forked orig at seq 7 as new run alt" in out
    assert "detect_intent" not in out  # the recorded effect is not repeated
    assert "run alt is waiting on 1 interrupt" in out
    data = json.loads(ok(cli("resume", "alt", "--value", "false", "--json", store=store)).stdout)
    assert data["run_id"] == "alt" and data["state"]["replies"] == ["refund declined"]
    assert "forked from orig at seq 7" in ok(cli("show", "alt", store=store)).stdout

    one_error_line(cli("fork", "orig", "--at", "99", store=store), 3, "1 to 12")
    # Before the recorded effect, the fork must be told what to do with it.
    one_error_line(cli("fork", "orig", "--at", "2", store=store), 3, "--effects rerun|reuse")
    reused = ok(cli("fork", "orig", "--at", "2", "--effects", "reuse", store=store)).stdout
    assert "detect_intent" in reused and "is waiting on 1 interrupt" in reused
    bad = ok(cli("fork", "orig", "--at", "2", "--effects", "again", store=store), 2)
    assert "'again' is not one of 'rerun', 'reuse'" in bad.stderr


def test_replay_ok_and_divergence(store: str) -> None:
    run_json(store, SUPPORT, "-i", REFUND, "--run-id", "rp")
    ok(cli("resume", "rp", "--value", "true", store=store))
    assert "replay matches the journal" in ok(cli("replay", "rp", store=store)).stdout

    diverged = ok(cli("replay", "rp", "--graph", "tests.cli_graphs:support_v2", store=store), 1)
    assert "replay diverges at seq" in diverged.stdout
    assert "detect_intent_v2" in diverged.stdout
    report = json.loads(
        ok(
            cli("replay", "rp", "-g", "tests.cli_graphs:support_v2", "--json", store=store), 1
        ).stdout
    )
    assert report["ok"] is False and report["divergence"]["seq"] >= 1


def test_a_run_of_a_graph_compiled_without_ref_asks_for_the_graph_option(store: str) -> None:
    from mainspring import SyncRuntime
    from tests import cli_graphs

    unreferenced = cli_graphs.g.compile()  # no ref=: the journal cannot say where it lives
    assert unreferenced.ref is None
    with SyncRuntime.open(store) as rt:
        rt.start(unreferenced, {"text": "refund", "amount": 5}, run_id="noref").wait()

    for command in (["resume", "noref", "-v", "true"], ["state", "noref"], ["replay", "noref"]):
        line = one_error_line(
            cli(*command, store=store),
            2,
            "run 'noref' belongs to graph 'support', which was compiled without ref=",
            "pass --graph MODULE:GRAPH",
        )
        assert "graph=" not in line and "Runtime(" not in line
    one_error_line(cli("fork", "noref", "--at", "3", store=store), 2, "--graph MODULE:GRAPH")

    with_graph = ["--graph", SUPPORT, "--json"]
    assert json.loads(ok(cli("state", "noref", *with_graph, store=store)).stdout)["seq"] == 8
    done = json.loads(ok(cli("resume", "noref", "-v", "true", *with_graph, store=store)).stdout)
    assert done["state"]["replies"] == ["refund issued"]
    # An ended run needs no graph to be told so.
    one_error_line(cli("resume", "noref", "-v", "1", store=store), 3, "nothing to resume")


def test_graph_prints_mermaid() -> None:
    out = ok(cli("graph", SUPPORT)).stdout
    assert out.startswith("flowchart TD\n")
    assert 'n_classify -.->|"refund"| n_refund' in out
    assert "__start__ --> n_classify" in out


# -- stores and errors ---------------------------------------------------------------


def test_store_from_env_default_and_plain_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAINSPRING_STORE", raising=False)
    ok(cli("run", SUPPORT, "-i", "{}", "--run-id", "default"))
    assert (tmp_path / "mainspring.db").exists()
    monkeypatch.setenv("MAINSPRING_STORE", "other.db")
    ok(cli("run", SUPPORT, "-i", "{}", "--run-id", "env"))
    assert (tmp_path / "other.db").exists()
    assert "env" in ok(cli("runs")).stdout
    assert "default" in ok(cli("runs", "--store", "mainspring.db")).stdout


def test_reading_a_missing_store_does_not_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    one_error_line(cli("runs", store=str(missing)), 3, "no Mainspring store at")
    assert not missing.exists()


@pytest.mark.parametrize("command", [["runs"], ["show", "x"], ["run", SUPPORT, "-i", "{}"]])
def test_foreign_store_file_is_refused_and_untouched(tmp_path: Path, command: list[str]) -> None:
    foreign = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 10
    foreign.write_bytes(content)
    one_error_line(cli(*command, store=str(foreign)), 3, "not a Mainspring store")
    assert foreign.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_unknown_run_id_is_one_line(store: str) -> None:
    run_json(store, SUPPORT, "-i", "{}")
    for command in ("show", "replay", "state", "fork"):
        one_error_line(cli(command, "nope", store=store), 3, "no run with id 'nope'")
    one_error_line(cli("resume", "nope", "--value", "1", store=store), 3, "no run with id 'nope'")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{text: hi}", "--input is not valid JSON"),
        ("@/nonexistent/input.json", "cannot read --input file"),
        ('{"nofield": 1}', "'nofield', which is not a field of Ticket"),
        ("[1, 2]", "input must be a mapping"),
    ],
)
def test_bad_input_is_a_usage_error(store: str, value: str, message: str) -> None:
    one_error_line(cli("run", SUPPORT, "--input", value, store=store), 2, message)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_colon", "must look like 'package.module:graph'"),
        ("tests.no_such_module:g", "cannot import module 'tests.no_such_module'"),
        ("tests.cli_graphs:missing", "has no attribute 'missing'"),
        ("tests.cli_graphs:not_a_graph", "not a graph"),
    ],
)
def test_bad_graph_reference_is_a_usage_error(store: str, ref: str, message: str) -> None:
    one_error_line(cli("run", ref, store=store), 2, message)
    one_error_line(cli("graph", ref), 2, message)


def test_bad_store_url(store: str) -> None:
    one_error_line(cli("runs", store="redis://localhost"), 3, "unknown store scheme 'redis'")


# Usage errors click finds before a command runs: one line each, naming the option and the help.
USAGE_ERRORS: list[tuple[list[str], tuple[str, ...]]] = [
    (
        ["runs", "--status", "bogus"],
        ("invalid value for '--status'", "'bogus' is not one of 'running', 'interrupted'"),
    ),
    (["fork", "r", "--at", "0"], ("invalid value for '--at'", "greater than or equal to 1")),
    (["run"], ("missing argument 'MODULE:GRAPH'", "(see 'mainspring run --help')")),
    (["resume"], ("missing argument 'RUN'",)),
    (["runs", "--bogus"], ("no such option: --bogus", "(see 'mainspring runs --help')")),
    (["--bogus", "runs"], ("no such option: --bogus", "(see 'mainspring --help')")),
    (["runn"], ("no such command 'runn'", "Did you mean 'run'")),
    (["runs", "--limit", "x"], ("invalid value for '--limit'", "valid integer")),
    (["run", SUPPORT, "--durability", "maybe"], ("'maybe' is not one of 'sync'",)),
]


@pytest.mark.parametrize(("args", "fragments"), USAGE_ERRORS)
def test_usage_errors_are_one_line(store: str, args: list[str], fragments: tuple[str, ...]) -> None:
    line = one_error_line(cli(*args, store=store), 2, *fragments)
    assert "╭" not in line and "Value error" not in line


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ref: str) -> Any:
        raise RuntimeError("boom")

    monkeypatch.delenv("MAINSPRING_DEBUG", raising=False)
    monkeypatch.setattr("mainspring.cli.graphs.import_graph", boom)
    one_error_line(cli("graph", SUPPORT), 4, "internal error: RuntimeError: boom", "--debug")
    debug = cli("graph", SUPPORT, "--debug")
    assert isinstance(debug.exception, RuntimeError)
    monkeypatch.setenv("MAINSPRING_DEBUG", "1")
    assert isinstance(cli("graph", SUPPORT).exception, RuntimeError)


def test_help_and_version() -> None:
    top = ok(cli("--help")).stdout
    commands = ("run", "resume", "fork", "cancel", "runs", "threads", "show", "state", "replay")
    for command in (*commands, "graph"):
        assert f" {command} " in top
    assert "Exit codes" in top
    assert "--input" in ok(cli("run", "--help")).stdout
    assert ok(cli("--version")).stdout.startswith("mainspring ")


# -- the real console script ---------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("mainspring")


def mainspring(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_console_script_runs_parks_and_resumes(tmp_path: Path) -> None:
    store = str(tmp_path / "script.db")  # a plain path ending in .db
    parked = mainspring("run", SUPPORT, "--input", REFUND, "--run-id", "x1", "--store", store)
    assert parked.returncode == 0, parked.stderr
    assert f"mainspring resume x1 --value '<JSON>' --store {store}" in parked.stdout

    done = mainspring("resume", "x1", "--value", '{"approved": true}', "--store", store, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"]["replies"] == ["refund issued"]

    shown = mainspring("show", "x1", "--store", store)
    assert shown.returncode == 0 and "effect_finished" in shown.stdout

    assert (
        mainspring("run", SUPPORT, "-i", REFUND, "--run-id", "x2", "--store", store).returncode == 0
    )
    cancelled = mainspring("cancel", "x2", "--store", store)  # imports the graph by its ref
    assert cancelled.returncode == 0 and "run x2 cancelled" in cancelled.stdout, cancelled.stderr


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_console_script_errors_and_exit_codes(tmp_path: Path) -> None:
    store = str(tmp_path / "script.db")
    failed = mainspring("run", "tests.cli_graphs:broken", "--input", "{}", "--store", store)
    assert failed.returncode == 1 and "ValueError" in failed.stdout

    for args, code, fragment in [
        (["show", "nope", "--store", store], 3, "no run with id 'nope'"),
        (["run", SUPPORT, "--input", "{oops", "--store", store], 2, "not valid JSON"),
        (["run", "tests.cli_graphs:nope", "--store", store], 2, "has no attribute 'nope'"),
    ]:
        result = mainspring(*args)
        assert result.returncode == code, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert fragment in result.stderr and "Traceback" not in result.stderr
    assert mainspring("--version").stdout.startswith("mainspring 0.")


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_console_script_usage_errors_are_one_line(tmp_path: Path) -> None:
    store = str(tmp_path / "script.db")
    for args, fragments in USAGE_ERRORS:
        result = mainspring(*args, "--store", store)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert all(f in result.stderr for f in fragments), result.stderr
        assert result.stdout == ""


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_a_recorded_graph_that_does_not_import_here_says_why_and_what_to_do(
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "elsewhere.db")
    parked = mainspring("run", SUPPORT, "-i", REFUND, "--run-id", "far", "--store", store)
    assert parked.returncode == 0, parked.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    for command in (["resume", "far", "-v", "true"], ["state", "far"]):
        elsewhere = subprocess.run(  # another directory: `tests` is not importable there
            [str(SCRIPT), *command, "--store", store],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert elsewhere.returncode == 2, elsewhere.stderr
        assert elsewhere.stderr.count("\n") == 1, elsewhere.stderr
        for fragment in (
            "error: run 'far' records its graph as 'tests.cli_graphs:support', which cannot be "
            f"imported from {tmp_path} (No module named 'tests')",
            "run the command from the project directory (the one holding 'tests')",
            "or pass --graph MODULE:GRAPH",
        ):
            assert fragment in elsewhere.stderr, elsewhere.stderr
    assert mainspring("resume", "far", "-v", "true", "--store", store).returncode == 0


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_a_recorded_graph_whose_module_lacks_a_dependency_says_so(tmp_path: Path) -> None:
    module = tmp_path / "deskgraph.py"
    module.write_text("from tests.cli_graphs import support as app\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSPRING_")}
    env["PYTHONPATH"] = str(ROOT)

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args, "--store", "desk.db"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert script("run", "deskgraph:app", "-i", REFUND, "--run-id", "d").returncode == 0
    module.write_text("import no_such_dependency  # noqa\n" + module.read_text())
    result = script("resume", "d", "-v", "true")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "records its graph as 'deskgraph:app', which cannot be imported" in result.stderr
    assert "(No module named 'no_such_dependency'); install what 'deskgraph' needs" in result.stderr
    assert "directory" not in result.stderr  # the module was found: the directory is right


def _wait_for_seq(store: str, run_id: str | None, seq: int) -> str:
    """The id of the run (``run_id``, or the only one) once it reached ``seq``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = cli("runs", "--json", store=store)
        records = [json.loads(line) for line in result.stdout.splitlines()]
        for r in records:
            if run_id in (None, r["run_id"]) and r["last_seq"] >= seq:
                return str(r["run_id"])
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached seq {seq}")


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
def test_show_follow_tails_a_run_another_process_drives(tmp_path: Path) -> None:
    store, gate = str(tmp_path / "live.db"), tmp_path / "gate"
    run = ["run", "tests.cli_graphs:gate", "-i", json.dumps({"path": str(gate)}), "--run-id", "z"]
    show = ["show", "z", "--follow", "--store", store]
    with subprocess.Popen([str(SCRIPT), *run, "--store", store], cwd=ROOT) as driver:
        try:
            _wait_for_seq(store, "z", 2)  # the node started; its effect waits for the gate
            with subprocess.Popen(
                [str(SCRIPT), *show], cwd=ROOT, stdout=subprocess.PIPE, text=True
            ) as follower:
                assert follower.stdout is not None
                seen = ""
                while "step_started" not in seen:  # the timeline so far has been printed
                    line = follower.stdout.readline()
                    assert line, f"show --follow ended early: {seen}"
                    seen += line
                gate.touch()
                live, _ = follower.communicate(timeout=30)
        finally:
            gate.touch()  # never leave the driver waiting
        assert driver.wait(timeout=30) == 0
    assert follower.returncode == 0
    assert "effect wait_for_gate → true" in live
    assert live.rstrip().endswith("■ finished")


@pytest.mark.skipif(not SCRIPT.exists(), reason="the mainspring console script is not installed")
@pytest.mark.parametrize("given_id", [["--run-id", "c"], []], ids=["run-id", "random-id"])
def test_ctrl_c_leaves_the_run_resumable(tmp_path: Path, given_id: list[str]) -> None:
    store = str(tmp_path / "crash.db")
    cmd = ["run", "tests.cli_graphs:slow", "-i", '{"naps": 5}', *given_id, "--store", store]
    with subprocess.Popen(
        [str(SCRIPT), *cmd], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        run_id = _wait_for_seq(store, "c" if given_id else None, 4)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert f"run {run_id} stays resumable from its journal: mainspring resume {run_id} " in stderr
    assert f"--store {store}" in stderr and "RUN" not in stderr

    listing = ok(cli("runs", store=store)).stdout
    assert "running*" in listing and "mainspring resume RUN" in listing
    resumed = ok(cli("resume", run_id, store=store)).stdout
    assert "effect nap0" not in resumed  # finished effects are not repeated
    assert f"✓ run {run_id} finished" in resumed


@pytest.mark.postgres
def test_the_same_commands_on_postgres(postgres_url_sync: str) -> None:
    postgres_url = postgres_url_sync
    parked = ok(cli("run", SUPPORT, "--input", REFUND, "--run-id", "pg1", store=postgres_url))
    assert f"mainspring resume pg1 --value '<JSON>' --store '{postgres_url}'" in parked.stdout
    done = json.loads(ok(cli("resume", "pg1", "-v", "true", "--json", store=postgres_url)).stdout)
    assert done["state"]["replies"] == ["refund issued"]
    assert "effect_finished" in ok(cli("show", "pg1", store=postgres_url)).stdout
    assert ok(cli("runs", "--json", store=postgres_url)).stdout.count("\n") == 1
    one_error_line(cli("show", "nope", store=postgres_url), 3, "no run with id 'nope'")


def test_run_with_models_calls_the_gateway_it_names(store: str) -> None:
    """`--models MODULE:ATTR` (or MAINSPRING_MODELS) gives ctx.model its gateway."""
    data = run_json(store, "tests.cli_graphs:ask", "--input", '{"q": "meaning?"}',
                    "--models", "tests.cli_graphs:gateway")  # fmt: skip
    assert data["status"] == "finished" and data["state"]["a"] == "forty-two"
    without = run_json(store, "tests.cli_graphs:ask", "--input", '{"q": "meaning?"}')
    assert without["status"] == "failed" and "models=Gateway" in str(without["error"])
    one_error_line(
        cli("run", "tests.cli_graphs:ask", "--models", "tests.cli_graphs:nothing", store=store),
        2,
        "--models tests.cli_graphs:nothing: cannot import it",
    )


def test_run_with_tools_calls_the_toolbox_it_names(store: str) -> None:
    data = run_json(store, "tests.cli_graphs:lookup", "--input", '{"q": "hey"}',
                    "--tools", "tests.cli_graphs:toolbox")  # fmt: skip
    assert data["status"] == "finished" and data["state"]["a"] == "HEY"
