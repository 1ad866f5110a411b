"""A run's feed in the stream hub: the bounded ring, tokens in their place, the end."""

from __future__ import annotations

import pytest

from mainspring.events import Event, EventKind, ModelDelta, StepStarted
from mainspring.server.streams.feed import RunFeed
from mainspring.status import RunStatus

pytestmark = pytest.mark.anyio


def event(seq: int) -> Event:
    return Event.of("r", seq, 0.0, StepStarted(seq, 0, "n"))


def token(seq: int, text: str) -> Event:
    return Event.of("r", seq, 0.0, ModelDelta(1, 0, "n", 0, "fast", text=text))


async def test_the_ring_keeps_the_newest_events_and_says_when_to_read_the_journal() -> None:
    feed = RunFeed("r", size=4, token_size=8)
    feed.committed([event(s) for s in range(1, 11)], None)
    assert [e.seq for e in feed.ring] == [7, 8, 9, 10]  # bounded
    assert feed.since(3) is None  # behind the ring: the journal
    assert [e.seq for e in feed.since(6) or []] == [7, 8, 9, 10]
    assert [e.seq for e in feed.since(8) or []] == [9, 10]
    assert feed.since(10) == []
    feed.committed([event(15)], None)  # written elsewhere meanwhile: a gap
    assert [e.seq for e in feed.ring] == [15] and feed.since(10) is None


async def test_tokens_follow_their_event_stale_ones_are_skipped() -> None:
    feed = RunFeed("r", size=8, token_size=3)
    cursor = feed.token_total
    for text in ("a", "b"):
        feed.send_nowait(token(5, text))
    assert feed.tokens_at(4, cursor) == ([], cursor)  # not yet: the client lacks event 5
    sent, cursor = feed.tokens_at(5, cursor)
    assert [t.data.text for t in sent] == ["a", "b"]  # type: ignore[attr-defined]
    for text in ("c", "d", "e", "f"):
        feed.send_nowait(token(6, text))
    sent, cursor = feed.tokens_at(7, cursor)  # past event 6: its tokens are stale
    assert sent == [] and cursor == feed.token_total
    feed.send_nowait(token(7, "g"))
    feed.send_nowait(event(8))  # (only tokens go to the token buffer)
    assert [t.data.text for t in feed.tokens_at(7, cursor)[0]] == ["g"]  # type: ignore[attr-defined]
    assert all(t.kind is EventKind.MODEL_DELTA for t in feed.tokens)


async def test_the_end_is_the_last_committed_event_of_an_ended_run() -> None:
    feed = RunFeed("r", size=8, token_size=8)
    feed.committed([event(1), event(2)], RunStatus.RUNNING)
    assert not feed.ended(2, until_park=True)
    feed.committed([event(3)], RunStatus.INTERRUPTED)
    assert not feed.ended(2, until_park=True) and feed.ended(3, until_park=True)
    assert not feed.ended(3, until_park=False)
    feed.committed([event(4)], RunStatus.FINISHED)
    assert feed.ended(4, until_park=False)
