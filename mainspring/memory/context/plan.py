"""The budget's bookkeeping while a context is assembled: room left, what is in, what is
out and why, and the system message's sections (summaries, memory items)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from ...models.messages import Message
from ...models.messages import system as system_message
from ...models.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY
from .counting import TokenCounter
from .types import Included, LeftOut, Origin, Reason

SUMMARY_HEADER: Final = "Summary of the earlier conversation:"
MEMORY_HEADER: Final = "Relevant memory:"
_HEADERS: Final = {"summary": SUMMARY_HEADER, "item": MEMORY_HEADER}
_PREFIX: Final = {"summary": "", "item": "- "}

Section = Literal["summary", "item"]


@dataclass(slots=True)
class Piece:
    """A summary or a memory item, as one line of its section in the system message."""

    kind: Section
    id: str
    text: str
    cut: bool = False  # truncated to fit

    @property
    def line(self) -> str:
        return _PREFIX[self.kind] + self.text


@dataclass(slots=True)
class Composed:
    messages: list[Message]
    tokens: int
    included: list[Included]


@dataclass(slots=True)
class Plan:
    counter: TokenCounter
    budget: int
    system: str | None
    room: int = 0
    last: int = 0  # tokens of the last thing cut to fit
    included: dict[str, Included] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    pieces: dict[Section, list[Piece]] = field(default_factory=lambda: {"summary": [], "item": []})
    full_tokens: dict[str, int] = field(default_factory=dict)  # a cut piece's whole size
    _system_open: bool = False

    def __post_init__(self) -> None:
        self.room = self.budget - TOKENS_PER_REPLY
        if self.system:
            tokens = self._open_system() + self.counter.text(self.system)
            self.room -= tokens
            self.included["system"] = Included("system", "system", tokens)

    def _open_system(self) -> int:
        self._system_open = True
        return TOKENS_PER_MESSAGE + self.counter.text("system")

    # -- the room ----------------------------------------------------------------

    def reserve(self, tokens: int) -> bool:
        if tokens > self.room:
            return False
        self.room -= tokens
        return True

    def include(self, source: Origin, id: str, tokens: int) -> None:
        self.included[id] = Included(source, id, tokens)

    def leave(
        self, source: Origin, id: str, reason: Reason, tokens: int, *,
        kept_tokens: int = 0, of: str | None = None, estimated: bool = False,
    ) -> None:  # fmt: skip
        if reason == "truncated":
            tokens = max(0, tokens - kept_tokens)
        self.left_out.append(LeftOut(source, id, reason, tokens, kept_tokens, of, estimated))

    def unclude(self, id: str) -> int:
        """Take ``id`` out of the context, giving its room back; its tokens."""
        tokens = self.included.pop(id).tokens
        self.room += tokens
        return tokens

    def leave_unweighed(self, message: Message, index: int, reason: Reason) -> None:
        """Leave out a message that never had to be counted (see ``LeftOut.estimated``)."""
        tokens, estimated = self.counter.known(message)
        self.leave("message", f"message:{index}", reason, tokens, estimated=estimated)

    # -- the system message's sections --------------------------------------------

    def piece_tokens(self, piece: Piece) -> int:
        return self.counter.text(piece.line) + 1  # and the newline before it

    def section_tokens(self, kind: Section) -> int:
        return self.counter.text(_HEADERS[kind]) + 2  # the blank line before, its newline

    def piece_overhead(self, kind: Section) -> int:
        """What the first piece of a section costs beyond its own line."""
        extra = 0 if self.pieces[kind] else self.section_tokens(kind)
        if not self._system_open:
            extra += TOKENS_PER_MESSAGE + self.counter.text("system")
        return extra + 1

    def add_piece(self, piece: Piece) -> bool:
        tokens = self.piece_tokens(piece)
        overhead = self.piece_overhead(piece.kind) - 1
        if tokens + overhead > self.room:
            return False
        if not self._system_open:
            self._open_system()
        self.room -= tokens + overhead
        self.pieces[piece.kind].append(piece)
        self.include(piece.kind, piece.id, tokens)
        return True

    def add_cut_piece(self, piece: Piece, minimum: int) -> bool:
        """``piece`` cut to the room left, if at least ``minimum`` tokens of it fit."""
        whole = self.piece_tokens(piece)
        room = self.room - self.piece_overhead(piece.kind) - self.counter.text(_PREFIX[piece.kind])
        if room < minimum:
            return False
        text = self.counter.truncate(piece.text, room)
        if not text:
            return False
        cut = Piece(piece.kind, piece.id, text, cut=True)
        if not self.add_piece(cut):
            return False
        kept = self.included.pop(piece.id).tokens
        self.full_tokens[piece.id] = whole
        self.leave(piece.kind, piece.id, "truncated", whole, kept_tokens=kept)
        return True

    # -- the result ----------------------------------------------------------------

    def system_text(self) -> str | None:
        blocks = [self.system] if self.system else []
        for kind in ("summary", "item"):
            pieces = self.pieces[kind]
            if pieces:
                blocks.append("\n".join([_HEADERS[kind], *(p.line for p in pieces)]))
        return "\n\n".join(blocks) if blocks else None

    def compose(self, task: Message, kept: dict[int, Message]) -> Composed:
        """The messages, counted exactly; over the budget (joined texts can count more
        than their parts), the least valuable piece goes until they fit."""
        while True:
            text = self.system_text()
            head = [system_message(text)] if text is not None else []
            turns = [kept[i] for i in sorted(kept)]
            messages = [*head, *turns, task]
            tokens = self.counter.messages(messages)
            if tokens <= self.budget or not self._drop_one(kept):
                break
        order = {"system": 0, "summary": 1, "item": 2, "message": 3, "task": 4}
        included = sorted(self.included.values(), key=lambda e: order[e.source])
        return Composed(messages, tokens, included)

    def _drop_one(self, kept: dict[int, Message]) -> bool:
        for kind in ("item", "summary"):
            pieces = self.pieces[kind]
            if pieces:
                piece = pieces.pop()
                self.drop(piece.kind, piece.id)
                return True
        if kept:
            oldest = min(kept)
            del kept[oldest]
            self.drop("message", f"message:{oldest}")
            return True
        return False

    def drop(self, source: Origin, id: str) -> None:
        """Take ``id`` out of the context for want of room (whole or cut, it is left out)."""
        entry = self.included.pop(id, None)
        if entry is not None:
            self.room += entry.tokens
            self.leave(source, id, "budget", entry.tokens)
            return
        # a cut piece: its "truncated" entry becomes "budget", for the whole of it
        for n, out in enumerate(self.left_out):
            if out.id == id and out.reason == "truncated":
                self.room += out.kept
                self.left_out[n] = LeftOut(source, id, "budget", out.tokens + out.kept)
                return
