"""The README's quickstart and the example agent run as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mainspring import SyncRuntime
from tests import cli_graphs

REPO = Path(__file__).resolve().parent.parent


def support_agent(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "support_agent.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_support_agent_example_runs_parks_and_resumes(tmp_path: Path) -> None:
    done = support_agent(tmp_path, "--db", str(tmp_path / "desk.db"), "--approve", "no")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run is interrupted; the process could exit now" in out
    assert out.count("waiting for a human") == 2, "two refunds above the limit wait for approval"
    assert '"refund denied": 2' in out and '"escalated": 1' in out
    assert "0 of them repeated across the resume" in out
    assert "(5 replies for 5 tickets)" in out
    assert len((tmp_path / "desk.outbox.jsonl").read_text().splitlines()) == 5


def test_support_agent_example_twice_in_a_row_keeps_the_first_run(tmp_path: Path) -> None:
    """The README's first command, run twice from the same directory (the default --db)."""
    outputs = [support_agent(tmp_path) for _ in range(2)]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        assert "(5 replies for 5 tickets)" in done.stdout
        assert "0 of them repeated across the resume" in done.stdout
    ids = [re.findall(r"^run (\w+) on ", done.stdout, re.M)[0] for done in outputs]
    with SyncRuntime.open(f"sqlite:///{tmp_path / 'support_agent.db'}") as rt:
        kept = {r.run_id: r.status.value for r in rt.list_runs()}
    assert kept == {
        ids[0]: "finished",
        ids[1]: "finished",
    }  # the first run's journal is still there
    outbox = (tmp_path / "support_agent.outbox.jsonl").read_text().splitlines()
    assert len(outbox) == 10


def _store_of_another_graph(path: Path) -> None:
    with SyncRuntime.open(f"sqlite:///{path}") as rt:
        rt.start(cli_graphs.support, {"text": "hello"}, run_id="theirs").wait()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "notes.db",
            lambda p: p.write_text("my notes, not a database\n"),
            "is not a SQLite file, so it is not a Mainspring store; it was left untouched",
        ),
        (
            "desk.outbox.jsonl",
            lambda p: p.write_text("dear diary\n"),
            "desk.outbox.jsonl exists and is not this example's outbox",
        ),
        ("agents.db", _store_of_another_graph, "holds runs of other graphs (support)"),
    ],
    ids=["not-a-store", "not-its-outbox", "store-of-other-graphs"],
)
def test_support_agent_example_never_touches_a_file_it_did_not_make(
    tmp_path: Path, name: str, make: Callable[[Path], object], message: str
) -> None:
    theirs = tmp_path / name
    make(theirs)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    db = theirs if theirs.suffix == ".db" else tmp_path / "desk.db"
    refused = support_agent(tmp_path, "--db", str(db))
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert message in refused.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README has a Quickstart python block"
    script = tmp_path / "quickstart.py"
    script.write_text(block.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "refund issued" in done.stdout
    assert (tmp_path / "agents.db").exists()


def test_benchmarks_md_is_in_the_repository_and_every_reference_resolves() -> None:
    assert (REPO / "BENCHMARKS.md").is_file(), "README.md and benchmarks/ refer to BENCHMARKS.md"
    for doc in (REPO / "README.md", REPO / "benchmarks" / "README.md"):
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):  # every relative Markdown link
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: link to missing {target}"
        # Every mention is a link, so that a reader (or a renderer) can follow it from any folder.
        unlinked = re.sub(r"\[`BENCHMARKS\.md`\]\([^)]*\)", "", text)
        assert "BENCHMARKS.md" not in unlinked, f"{doc.name} names BENCHMARKS.md without a link"
