"""The SSE parser: the spec's line rules, and the same events whatever the chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring.models.sse import ServerSentEvent, SSEParser
from tests.wire_server import WIRE


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    parser = SSEParser()
    return [e for c in chunks for e in parser.feed(c)]


def test_fields_comments_and_multiline_data() -> None:
    raw = (
        b": a comment\n"
        b"event: update\ndata: first\ndata:second\nid: 7\nretry: 1500\n\n"
        b"data\n\n"  # a field with no colon: empty data
        b"data:  two spaces\n\n"  # only one space is dropped
        b"event: lonely\n\n"  # no data: no event, and its type does not leak
        b"data: after\n\n"
        b"unknown: ignored\ndata: x\n\n"
    )
    assert parse(raw) == [
        ServerSentEvent("first\nsecond", "update", "7", 1500),
        ServerSentEvent("", "message", "7", 1500),
        ServerSentEvent(" two spaces", "message", "7", 1500),
        ServerSentEvent("after", "message", "7", 1500),
        ServerSentEvent("x", "message", "7", 1500),
    ]


def test_crlf_cr_and_lf_line_ends_mix() -> None:
    assert parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        ServerSentEvent("a"),
        ServerSentEvent("b"),
        ServerSentEvent("c"),
    ]


def test_cr_then_lf_across_chunks_is_one_line_end() -> None:
    assert parse(b"data: a\r", b"\ndata: b\r\n\r", b"\n") == [ServerSentEvent("a\nb")]


def test_bom_unfinished_event_and_split_utf8() -> None:
    text = "data: héllo ✓\n\n".encode()
    assert parse(b"\xef\xbb\xbf" + text[:8], text[8:], b"data: never finished\n") == [
        ServerSentEvent("héllo ✓")
    ]


def test_id_with_nul_is_ignored() -> None:
    assert parse(b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n") == [
        ServerSentEvent("a", id="1"),
        ServerSentEvent("b", id="1"),
    ]


FIXTURES = sorted(p.read_bytes() for p in WIRE.glob("*.sse"))
LINE_END = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A wire fixture, or a random stream, with its line ends rewritten at random."""
    if draw(st.booleans()):
        raw = draw(st.sampled_from(FIXTURES))
    else:
        field = st.sampled_from([b"data", b"event", b"id", b": c", b"retry", b"data"])
        value = st.text(
            st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
            max_size=12,
        )
        lines = draw(st.lists(st.tuples(field, value), max_size=12))
        raw = (
            b"".join(
                f + b": " + v.encode() + b"\n" + (b"\n" if i % 3 == 2 else b"")
                for i, (f, v) in enumerate(lines)
            )
            + b"\n"
        )
    end = draw(LINE_END)
    return raw.replace(b"\n", end) if end != b"\r" else raw.replace(b"\n", b"\r")


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_any_chunking_gives_the_same_events(raw: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=20)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert parse(*chunks) == parse(raw)
    assert parse(*(bytes([b]) for b in raw)) == parse(raw)


def test_fixture_event_counts() -> None:
    events = parse((WIRE / "anthropic_stream_tool_use.sse").read_bytes())
    assert events[0].event == "message_start"
    assert events[-1].event == "message_stop"
    assert sum(e.event == "content_block_delta" for e in events) == 22
    chat = parse((WIRE / "openai_chat_stream.sse").read_bytes())
    assert chat[-1].data == "[DONE]" and all(e.event == "message" for e in chat)
