"""The README's quickstart and the example agent run as documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mainspring import SyncRuntime
from tests import cli_graphs
from tests.wire_server import Received, Reply, WireServer

REPO = Path(__file__).resolve().parent.parent


MODEL_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MAINSPRING_OPENAI_BASE_URL")


def support_agent(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The example as a user runs it; offline (no model key in its environment) unless
    ``env`` names a model."""
    base = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "support_agent.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def test_support_agent_example_runs_against_an_openai_compatible_server(tmp_path: Path) -> None:
    """MAINSPRING_OPENAI_BASE_URL: the same example, its model a real HTTP server speaking
    the Chat Completions wire format (as vLLM, llama.cpp or Ollama would)."""
    intents = {"refund": "refund", "address": "account", "crash": "bug", "broken link": "bug"}

    def answer(request: Received) -> Reply:
        body = request.json()
        assert body["response_format"]["type"] == "json_schema"
        text = body["messages"][-1]["content"].lower()
        intent = next((v for k, v in intents.items() if k in text), "other")
        content = json.dumps({"intent": intent, "confidence": 0.8})
        usage = {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}
        if body.get("stream"):  # the example follows its run live, so its calls stream
            head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
            chunks = [
                {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                *(
                    {**head, "choices": [{"index": 0, "delta": {"content": content[i : i + 9]}}]}
                    for i in range(0, len(content), 9)
                ),
                {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {**head, "choices": [], "usage": usage},
            ]
            events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
            return Reply.sse(events + b"data: [DONE]\n\n")
        return Reply.json(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    with WireServer().on("/v1/chat/completions", answer) as server:
        env = {
            "MAINSPRING_OPENAI_BASE_URL": f"{server.base_url}/v1",
            "MAINSPRING_OPENAI_MODEL": "local-model",
        }
        done = support_agent(tmp_path, "--approve", "yes", env=env)
        requests = list(server.requests)
    assert done.returncode == 0, done.stderr
    assert '"escalated": 1' in done.stdout and '"refunded": 3' in done.stdout
    assert "model: 5 calls, 500 input and 60 output tokens (as the provider reported them)" in (
        done.stdout
    )
    assert len(requests) == 5  # one call per ticket, none repeated by the resume
    assert {r.json()["model"] for r in requests} == {"local-model"}


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


def test_readme_models_example_builds_its_gateway() -> None:
    """The gateway example runs as written (its providers and ledger connect on first use;
    nothing here calls a model)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Models: the gateway\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README has a models python block"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    gateway = namespace["gateway"]
    assert gateway.router.resolve("router") == "fast"
    assert gateway.router.chain("fast") == ("fast", "claude")
    assert [type(h).__name__ for h in gateway.gate_hooks] == ["LoopBreaker", "BudgetGate"]


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


def ops_agent(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "ops_agent.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=base,
    )


@pytest.mark.parametrize("approve", ["yes", "no"])
def test_ops_agent_example_survives_a_kill_and_repeats_nothing(
    tmp_path: Path, approve: str
) -> None:
    """The README's main job: an agent with several tools, an MCP server's tool, a
    sandboxed code call and an approval; its process is killed while it waits, and the run
    resumes in a new process without one call made twice."""
    done = ops_agent(tmp_path, "--approve", approve)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "parked on an approval; its process was killed (SIGKILL)" in out
    assert '"tool": "refund", "args": {"order_id": "A-1001", "amount": 180.0}' in out
    assert "resumed in a new process: the run finished" in out
    assert "tool:lookup_order, tool:warehouse_stock, tool:python, tool:refund), 0 repeated" in out
    assert "decided 5 of 5 kinds of call" in out  # the policy's grounds on every call
    assert "anchors: intact" in out  # the audit chain verified after the kill and resume
    if approve == "yes":
        assert "Order A-1001 is refunded (180 EUR, RF-A-1001)" in out
        assert "average order is 121.50 EUR" in out  # computed in the sandbox
    else:
        assert "We could not refund order A-1001 now" in out
    assert (tmp_path / "ops_agent.db").exists()


def test_readme_governance_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's governance example, as written: a policy, the screen, the PII redactor,
    a tool's own secret, a tenant's view and the audit verification."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Governance: [^\n]*\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README has a governance python block"
    monkeypatch.setenv("PAYMENTS_KEY", "pk-live-0123456789")
    namespace: dict[str, Any] = {"__name__": "readme_governance"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    anyio.run(namespace["main"])
    out = capsys.readouterr().out
    assert "refunded 180.0 on A-1 with a key of 18 characters" in out
    assert out.rstrip().endswith("True")  # the audit chain verified
    assert "pk-live" not in out


def test_memory_agent_example_recalls_cites_and_keeps_users_apart(tmp_path: Path) -> None:
    """examples/memory_agent.py: a handbook ingested with its sections, a fact remembered
    in one conversation and recalled in the next, another user kept apart, and a long
    thread fitted to a budget."""
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "memory_agent.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ingested handbook.md: 4 chunks" in out
    assert "You live in Lisbon, so your order ships from Porto" in out
    assert 'Returns > Shoes and clothing" (handbook.md#0)' in out  # the citation
    bob = next(line for line in out.splitlines() if line.startswith("bob:"))
    assert "Lisbon" not in bob and "Tell me where you live" in bob
    assert "memory.recall, model:fast, tool:handbook, model:fast, memory.remember" in out
    context = next(line for line in out.splitlines() if line.startswith("context:"))
    used, budget = map(int, re.findall(r"(\d+) of (\d+) tokens", context)[0])
    assert used <= budget == 400 and "'budget':" in context


def test_readme_memory_example_runs(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Memory: [^\n]*\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README has a memory python block"
    namespace: dict[str, Any] = {"__name__": "readme_memory"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    answer = anyio.run(namespace["main"], str(tmp_path))
    assert answer == "# Returns\n\nShoes: 30 days, unworn."
