"""The README's quickstart and the example agent run as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_support_agent_example_runs_parks_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "desk.db"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "support_agent.py"),
            "--db",
            str(db),
            "--approve",
            "no",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run is interrupted; the process could exit now" in out
    assert out.count("waiting for a human") == 2, "two refunds above the limit wait for approval"
    assert '"refund denied": 2' in out and '"escalated": 1' in out
    assert "0 of them repeated across the resume" in out
    assert "(5 replies for 5 tickets)" in out
    assert len((tmp_path / "desk.outbox.jsonl").read_text().splitlines()) == 5


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
