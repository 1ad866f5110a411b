"""A canary secret, used, echoed, failed with and logged by tools, is looked for in every
sink afterwards: the store's bytes (SQLite file, PostgreSQL rows), the journal events,
the spans a real OTLP receiver got, the structured logs, the CLI's output, the error a
caller gets, an approval's payload and what an agent's model was shown; and a policy
rule failing on it, or a hook quoting it in a denial, leaks it nowhere either."""

from __future__ import annotations

import io
import json
import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from typer.testing import CliRunner

from mainspring import RunStatus, Runtime
from mainspring.agents import Agent
from mainspring.engine.gate import Deny
from mainspring.errors import RunFailedError
from mainspring.events import EffectDecided, EffectStarted, Event, StepFinished
from mainspring.guard.policy import Policy, Rules, deny
from mainspring.guard.secrets import HANDED, EnvSecrets, SecretFilter
from mainspring.models import Gateway, ModelRequest, ScriptedModel, ToolCall
from mainspring.telemetry.logs import JournalLogger, configure_logging
from mainspring.telemetry.tracing.tracer import setup_tracing
from mainspring.tools import Toolbox

from . import secrets_graphs as sg
from .conftest import postgres_schema_url
from .telemetry_graphs import http_collector

pytestmark = pytest.mark.anyio
MARK = "[secret:API_KEY]"


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(the secret, the part of it any leak would show): quotes and slashes in it, so that
    a JSON- or URL-encoded copy would be a leak too."""
    core = uuid.uuid4().hex
    monkeypatch.setenv("MS_CANARY_API_KEY", f'cnry-{core}/"+=')
    yield f'cnry-{core}/"+=', core
    HANDED.clear()


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(json=True, level=logging.DEBUG, stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)


async def _run_both(rt: Runtime) -> tuple[str, str, dict[str, Any], RunFailedError]:
    """The run that uses every tool (parks once for the approval) and the run that fails."""
    handle = await rt.start(sg.everything, {})
    parked = await handle.wait()
    assert parked.status is RunStatus.INTERRUPTED
    payload = parked.interrupts[0].payload
    await rt.resume(handle.run_id, True)
    state = await rt.handle(handle.run_id).result()
    assert state["out"][3] == f"took {len('the key is ') + len(_secret())} characters"
    failed = await rt.start(sg.failing, {})
    with pytest.raises(RunFailedError) as caught:
        await failed.result()
    return handle.run_id, failed.run_id, payload, caught.value


def _secret() -> str:
    import os

    return os.environ["MS_CANARY_API_KEY"]


def _texts(events: list[Event]) -> str:
    return repr(events) + json.dumps([e.data.as_dict() for e in events], default=repr)


async def test_the_canary_reaches_no_sink_on_sqlite(
    tmp_path: Path, canary: tuple[str, str], logged: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    secret, core = canary
    caplog.handler.addFilter(SecretFilter())
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    box = Toolbox(sg.TOOLS, secrets=EnvSecrets(prefix="MS_CANARY_"))
    with http_collector() as (collector, endpoint):
        tracer = setup_tracing("otlp-http", endpoint=endpoint, capture_io=True)
        assert tracer is not None
        journal_log = JournalLogger(logging.getLogger("mainspring.events"))
        async with Runtime.open(url, tools=box, listeners=[tracer, journal_log]) as rt:
            ok_id, failed_id, payload, error = await _run_both(rt)
            events = await rt.events(ok_id) + await rt.events(failed_id)
            assert tracer.flush(10)
            journal_log.flush(10)
        tracer.shutdown()
        spans = b"".join(r.SerializeToString() for r in collector.requests)

    # the tools did get the secret, and the scrubbing shows where it would have been
    out = next(
        e.data.update["out"]
        for e in events
        if isinstance(e.data, StepFinished) and "out" in (e.data.update or {})
    )
    assert out[0] == f"called upstream with a key of {len(secret)} characters"
    assert out[1] == {
        "key": MARK,
        "header": f"Bearer {MARK}",
        "nested": [{"k": MARK}],
        MARK: "as a key",
    }
    assert out[4].startswith("caught: tool 'fails' failed: RuntimeError: upstream refused key")
    assert MARK in out[4] and out[5] == "approved and done"

    sinks = {
        "sqlite file": b"".join(p.read_bytes() for p in tmp_path.glob("canary.db*")),
        "journal events": _texts(events).encode(),
        "otlp spans": spans,
        "structured logs": logged.getvalue().encode(),
        "caplog": caplog.text.encode(),
        "approval payload": json.dumps(payload).encode(),
        "run error": (repr(error) + "".join(traceback.format_exception(error))).encode(),
        "run error record": json.dumps(error.error).encode(),
    }
    cli = await anyio.to_thread.run_sync(_cli_output, url, ok_id, failed_id)
    sinks["cli"] = cli.encode()
    for sink, data in sinks.items():
        assert core.encode() not in data, f"the secret leaked into {sink}"
    assert spans and b"execute_tool" in spans and MARK.encode() in spans
    assert MARK in logged.getvalue() and "calling upstream with" in logged.getvalue()
    assert MARK in caplog.text and "bad key" in caplog.text
    assert MARK in cli and "tool:echoes" in cli
    assert '"hash"' in cli and '"prev"' in cli  # the export was read, records and all
    assert payload["data"]["args"] == {"note": f"the key is {MARK}"}


def _cli_output(url: str, *run_ids: str) -> str:
    from mainspring.cli import app

    texts = []
    for run_id in run_ids:
        for argv in (["show", run_id], ["show", run_id, "--json"], ["trace", run_id]):
            result = CliRunner().invoke(app, [*argv, "--store", url])
            assert result.exit_code == 0, (argv, result.output)
            texts.append(result.output)
    # the audit trail: its export (what leaves the store for auditors) and its verification
    for argv in (["audit", "export"], ["audit", "verify"]):
        result = CliRunner().invoke(app, [*argv, "--store", url])
        assert result.exit_code == 0, (argv, result.output)
        texts.append(result.output)
    return "\n".join(texts)


async def test_the_canary_reaches_no_postgres_row(canary: tuple[str, str]) -> None:
    _, core = canary
    box = Toolbox(sg.TOOLS, secrets=EnvSecrets(prefix="MS_CANARY_"))
    async with postgres_schema_url() as url:
        async with Runtime.open(url, tools=box) as rt:
            await _run_both(rt)
        schema = url.rpartition("schema=")[2]
        conn = await asyncpg.connect(url.partition("?")[0])
        try:
            tables = [r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
            )]  # fmt: skip
            rows = [
                r["row"]
                for t in tables
                for r in await conn.fetch(
                    f'SELECT row_to_json(t)::text AS row FROM "{schema}"."{t}" t'
                )
            ]
        finally:
            await conn.close()
    assert tables and rows
    dumped = "\n".join(rows)
    assert "tool:echoes" in dumped and MARK.replace('"', '\\"') in dumped
    assert core not in dumped


async def test_an_agents_model_is_never_shown_the_canary(
    tmp_path: Path, canary: tuple[str, str]
) -> None:
    _, core = canary

    def script(request: ModelRequest) -> Any:
        results = [m.text for m in request.messages if m.role == "tool"]
        if not results:
            return [ToolCall("c1", "echoes", {}), ToolCall("c2", "fails", {})]
        return " | ".join(results)

    model = ScriptedModel(script)
    agent = Agent("careless", "fast", "Use the tools.", tools=[sg.echoes, sg.fails])
    box = Toolbox(agent.all_tools(), secrets=EnvSecrets(prefix="MS_CANARY_"))
    async with Runtime.open(
        f"sqlite:///{tmp_path / 'agent.db'}", models=Gateway({"fast": model}), tools=box
    ) as rt:
        result = await agent.run(rt, "go")
        events = await rt.events(result.run_id)
    assert result.status is RunStatus.FINISHED and len(model.calls) == 2
    shown = repr(model.calls)
    assert MARK in shown and "upstream refused key" in shown  # the model saw both results
    assert core not in shown and core not in result.text and core not in _texts(events)


async def test_an_argument_holding_a_secret_is_scrubbed_even_in_a_fresh_process(
    tmp_path: Path, canary: tuple[str, str]
) -> None:
    """The gate hook looks up the tool's declared secrets before recording its arguments,
    so a process that has handed out nothing yet records no value either."""
    _, core = canary
    HANDED.clear()
    box = Toolbox(sg.TOOLS, secrets=EnvSecrets(prefix="MS_CANARY_"))
    async with Runtime.open(f"sqlite:///{tmp_path / 'a.db'}", tools=box) as rt:
        handle = await rt.start(sg.everything, {})
        parked = await handle.wait()
        events = await rt.events(handle.run_id)
        await rt.cancel(handle.run_id)
    started = [
        e.data for e in events if isinstance(e.data, EffectStarted) and e.data.name == "tool:takes"
    ]
    assert started[0].args == {"note": f"the key is {MARK}"}
    assert core not in json.dumps(parked.interrupts[0].payload)


class _Quoting:
    """A careless gate hook: its denial's reason and basis quote the arguments."""

    name = "quoting"

    def before(self, effect: Any) -> Deny | None:
        note = str(effect.args.get("note", ""))
        if note.startswith("quote"):
            return Deny(f"I will not take {note!r}", {"saw": note, "nested": [note]})
        return None


async def test_a_failing_policy_rule_and_a_quoting_hook_leak_no_canary(
    tmp_path: Path, canary: tuple[str, str], logged: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy rule that fails on the secret (``int(req.args["note"])``) denies naming its
    exception's type only; a hook whose denial quotes the arguments is scrubbed by the
    gate (``Gate.recorded_text``) in the journal and in the error the node gets. A fresh
    process: nothing was handed out before the denied calls."""
    _, core = canary
    HANDED.clear()
    caplog.set_level(logging.DEBUG, logger="mainspring.guard.policy")
    rules = Rules()

    @rules.rule("note-number", tools=["takes"])
    def note_number(req: Any) -> Any:
        if int(req.args["note"]) > 5:  # a buggy rule: the note is no number
            return deny("too big")
        return None

    url = f"sqlite:///{tmp_path / 'refused.db'}"
    box = Toolbox(sg.TOOLS, secrets=EnvSecrets(prefix="MS_CANARY_"))
    async with Runtime.open(url, tools=box, gates=[_Quoting(), Policy(rules=[rules])]) as rt:
        handle = await rt.start(sg.refused, {})
        state = await handle.result()
        events = await rt.events(handle.run_id)
    failed_rule, quoted = state["out"]
    assert failed_rule.startswith("EffectDeniedError: ") and "'note-number'" in failed_rule
    assert "it raised ValueError" in failed_rule and "invalid literal" not in failed_rule
    assert (
        quoted
        == f"EffectDeniedError: effect 'tool:takes' was denied by quoting: I will not take 'quote {MARK}'"
    )
    decided = [e.data for e in events if isinstance(e.data, EffectDecided)]
    assert [d.decision for d in decided] == ["deny", "deny"]
    assert decided[1].basis == {"saw": f"quote {MARK}", "nested": [f"quote {MARK}"]}
    # the rule's failure is in the log, with its message at DEBUG, scrubbed there
    assert "note-number" in caplog.text and "ValueError" in caplog.text
    sinks = {
        "sqlite file": b"".join(p.read_bytes() for p in tmp_path.glob("refused.db*")),
        "journal events": _texts(events).encode(),
        "node state": repr(state).encode(),
        "structured logs": logged.getvalue().encode(),
        "caplog": caplog.text.encode(),
    }
    for sink, data in sinks.items():
        assert core.encode() not in data, f"the secret leaked into {sink}"
