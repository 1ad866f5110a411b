"""Structured logs: JSON lines with run, trace, span, node and event kind; one line per journal event."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from mainspring import Runtime
from mainspring.events import (
    Discarded,
    EffectFinished,
    ErrorInfo,
    Event,
    EventKind,
    Failed,
    Finished,
    StepFailed,
)
from mainspring.store import MemoryStore
from mainspring.telemetry import ids
from mainspring.telemetry.logs import FIELDS, JournalLogger, configure_logging, log_context
from mainspring.telemetry.spans.derive import derive_spans

from . import telemetry_graphs as tg

pytestmark = pytest.mark.anyio


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = configure_logging(
        json=True, level=logging.DEBUG, stream=buffer, logger="mainspring.test"
    )
    try:
        yield buffer
    finally:
        logging.getLogger("mainspring.test").removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_one_json_line_per_event_with_trace_ids(stream: io.StringIO) -> None:
    store = MemoryStore()
    logger = JournalLogger("mainspring.test.events", store=store)
    async with Runtime(store, listeners=[logger]) as rt:
        await rt.run(tg.agent, {"text": "hi"}, run_id="log-1")
        events = await rt.events("log-1")
    logger.close()
    records = lines(stream)
    assert [r["seq"] for r in records] == [
        e.seq for e in events
    ]  # run_started too, read from the journal
    for record in records:
        assert set(FIELDS) <= record.keys()
        assert record["run_id"] == "log-1" and record["trace_id"] == ids.hex_trace(
            ids.trace_of("log-1", tg.started(events))
        )
        assert record["logger"] == "mainspring.test.events"
    spans = {s.span_id: s for s in derive_spans(events)}
    by_kind: dict[str, dict[str, Any]] = {}
    for record in records:
        by_kind.setdefault(record["event"], record)  # the first of each kind
    tool = by_kind["effect_started"]
    assert spans[int(tool["span_id"], 16)].name == "execute_tool search"
    assert tool["node"] == "answer" and tool["level"] == "debug"
    assert (
        by_kind["step_failed"]["level"] == "warning"
        and "retrying" in by_kind["step_failed"]["message"]
    )
    assert by_kind["run_started"]["level"] == "info"
    assert int(by_kind["finished"]["span_id"], 16) == ids.run_span_id("log-1")
    assert by_kind["finished"]["ts"].startswith("20")


def test_library_and_user_records_carry_bound_context(stream: io.StringIO) -> None:
    log = logging.getLogger("mainspring.test.user")
    with log_context(run_id="r-9", node="draft", trace_id="ab" * 16):
        log.info("drafting %s", "x", extra={"chars": 12})
    log.warning("no context")
    first, second = lines(stream)
    assert (
        first["message"] == "drafting x" and first["run_id"] == "r-9" and first["node"] == "draft"
    )
    assert first["chars"] == 12 and first["span_id"] is None and first["event"] is None
    assert second["run_id"] is None and second["level"] == "warning"


def test_pretty_output_for_a_terminal() -> None:
    buffer = io.StringIO()
    handler = configure_logging(json=False, stream=buffer, logger="mainspring.test.pretty")
    try:
        with log_context(run_id="r-1", node="n"):
            logging.getLogger("mainspring.test.pretty").info("hello")
    finally:
        logging.getLogger("mainspring.test.pretty").removeHandler(handler)
    text = buffer.getvalue()
    assert "INFO" in text and "hello" in text and "run=r-1" in text and "node=n" in text
    assert not text.lstrip().startswith("{")


def test_each_kind_of_event_says_what_happened() -> None:
    from mainspring.telemetry.logs import _describe

    error = ErrorInfo("ValueError", "bad")
    said = {
        data.kind: _describe(Event.of("r", 2, 1.0, data))
        for data in (
            StepFailed(0, 1, "a", attempt=1, error=error, retry=True, delay=0.5),
            EffectFinished(0, 1, "a", effect=0, name="tool:x", error=error),
            Discarded(0, 1, "a", attempt=1, seconds=2.0, result=3),
            Failed(error),
            Finished(),
        )
    }
    assert said[EventKind.STEP_FAILED] == (
        logging.WARNING,
        "node a failed: ValueError: bad; retrying in 0.50 s",
    )
    assert said[EventKind.EFFECT_FINISHED] == (
        logging.WARNING,
        "effect tool:x raised ValueError: bad",
    )
    assert said[EventKind.DISCARDED] == (
        logging.DEBUG,
        "node a finished 2.0 s late; what it returned was discarded",
    )
    late_effect = Discarded(0, 1, "a", attempt=1, seconds=2.0, effect=0, name="tool:x")
    assert _describe(Event.of("r", 2, 1.0, late_effect))[1].startswith(
        "effect tool:x of node a finished 2.0 s late"
    )
    assert said[EventKind.FAILED] == (logging.ERROR, "run failed: ValueError: bad")
    assert said[EventKind.FINISHED] == (logging.INFO, "run finished")


def test_telemetry_modules_never_print() -> None:
    import ast
    import pathlib

    import mainspring.telemetry as package

    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
        ]
        assert not calls, f"{path.name} prints"
