"""Context assembly: from a task, recent messages, memory items and summaries, the
messages for one model call within a token budget, and what was left out and why.

The order in which inputs claim the budget (the documented mix):

1. the system prompt and the task: always (a budget too small for them is an error);
2. the last ``keep_last`` messages, newest first, each if it fits (a plain-text one
   that does not is cut to the room left, with a marker);
3. summaries given by the caller, in order;
4. memory items may then reserve up to ``item_share`` of what is left (at most what
   they would take); older messages take the rest, newest
   first and without gaps. When older messages still do not fit and there is a
   summarizer, room for a summary (at most ``summary_tokens``, at most a third of the
   messages' room) is set aside and the oldest messages are summarised into it;
5. items, by score, best first, each if it fits (with what the messages left unused);
   an item repeating anything already in the context is dropped as a duplicate; when
   room is left, the best item that did not fit is cut to it.

Items and summaries go into the system message, as sections after the system prompt;
the task is the last (user) message. The total is then counted exactly and, should
joining texts have cost more than their parts (BPE merges rarely do), the least
valuable piece goes until it fits: the budget is never exceeded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from ...models.messages import Message, TextPart, message_from_mapping, user
from ..knowledge.citations import cite
from ..semantic.items import Hit, MemoryItem
from .counting import TokenCounter
from .dedupe import Seen, normalise
from .plan import Piece, Plan
from .summarize import Summarizer
from .types import AssembledContext, ContextBudgetError, Summary

MIN_TRUNCATED: Final = 32  # tokens: a cut piece shorter than this says too little to keep

MessageLike: TypeAlias = Message | Mapping[str, Any]
ItemLike: TypeAlias = Hit | MemoryItem
SummaryLike: TypeAlias = Summary | str


async def assemble(
    task: str,
    *,
    budget: int,
    messages: Sequence[MessageLike] = (),
    items: Sequence[ItemLike] = (),
    summaries: Sequence[SummaryLike] = (),
    system: str | None = None,
    model: str | None = None,
    keep_last: int = 2,
    summarizer: Summarizer | None = None,
    item_share: float = 0.25,
    summary_tokens: int = 512,
) -> AssembledContext:
    """The messages for a call on ``task`` within ``budget`` tokens (see the module's
    doc for the order). Tokens are counted for ``model`` (o200k_base when None)."""
    _check(task, budget, keep_last, item_share, summary_tokens)
    counter = TokenCounter(model)
    system = system or None
    msgs = [m if isinstance(m, Message) else _message(m, i) for i, m in enumerate(messages)]
    plan = Plan(counter, budget, system)

    task_message = user(task)
    task_tokens = counter.message(task_message)
    if not plan.reserve(task_tokens):
        raise ContextBudgetError(
            f"a budget of {budget} tokens cannot hold the system prompt and the task "
            f"({budget - plan.room + task_tokens} tokens with the chat format's framing): "
            "raise the budget or shorten them"
        )
    plan.include("task", "task", task_tokens)
    candidates = list(range(len(msgs)))
    if msgs and msgs[-1].role == "user" and normalise(msgs[-1].text) == normalise(task):
        last = candidates.pop()  # the thread already ends with the task
        plan.leave("message", f"message:{last}", "duplicate", counter.message(msgs[-1]), of="task")

    kept: dict[int, Message] = {}
    older = _recent(plan, msgs, candidates, keep_last, kept)
    given = _given_summaries(plan, summaries)
    ranked = _rank_items(items)
    summary_room, reserve = _older_messages(
        plan, msgs, older, kept, ranked, item_share, summary_tokens if summarizer else 0
    )
    summary, error = None, None
    if older and summarizer is not None and summary_room:
        summary, error = await _summarise(
            plan, msgs, older, kept, summarizer, summary_room, reserve
        )
    for i in older:  # what neither fitted nor was summarised
        plan.leave_unweighed(msgs[i], i, "budget")
    _drop_orphans(plan, msgs, kept)
    _items(plan, ranked, _seen(task, system, given, summary, msgs, kept))

    out = plan.compose(task_message, kept)
    return AssembledContext(
        messages=out.messages,
        tokens=out.tokens,
        budget=budget,
        included=out.included,
        left_out=plan.left_out,
        summary=summary,
        summary_error=error,
    )


def _check(task: str, budget: int, keep_last: int, item_share: float, summary: int) -> None:
    if not isinstance(task, str):
        raise TypeError(f"the task must be a str, not {type(task).__name__}")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive number of tokens, not {budget!r}")
    if keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
    if not 0.0 <= item_share <= 1.0:
        raise ValueError(f"item_share is a fraction of the budget (0 to 1), not {item_share}")
    if summary <= 0:
        raise ValueError(f"summary_tokens must be positive, not {summary}")


def _message(m: Any, index: int) -> Message:
    if not isinstance(m, Mapping):
        raise TypeError(
            f"messages[{index}] must be a Message or a dict with 'role' and 'content', "
            f"not {type(m).__name__}"
        )
    return message_from_mapping(m)


def _recent(
    plan: Plan, msgs: list[Message], candidates: list[int], keep_last: int,
    kept: dict[int, Message],
) -> list[int]:  # fmt: skip
    """Keep the last ``keep_last`` messages that fit; return the older candidates, newest
    first (none when a recent one did not fit whole: kept turns have no gaps)."""
    recent = candidates[len(candidates) - keep_last :] if keep_last else []
    older = candidates[: len(candidates) - len(recent)]
    counter = plan.counter
    newest_first = recent[::-1]
    for at, i in enumerate(newest_first):
        m = msgs[i]
        tokens = counter.message(m)
        if plan.reserve(tokens):
            kept[i] = m
            plan.include("message", f"message:{i}", tokens)
            continue
        cut = _cut_message(plan, m)
        if cut is not None:
            kept[i] = cut
            plan.leave("message", f"message:{i}", "truncated", tokens, kept_tokens=plan.last)
        else:
            plan.leave("message", f"message:{i}", "budget", tokens)
        for j in newest_first[at + 1 :] + older[::-1]:
            plan.leave_unweighed(msgs[j], j, "budget")
        return []
    return older[::-1]


def _cut_message(plan: Plan, m: Message) -> Message | None:
    """``m`` cut to the room left, if it is plain text and enough of it fits."""
    if not m.content or any(not isinstance(p, TextPart) for p in m.content):
        return None
    frame = plan.counter.message(Message(m.role, [], m.tool_call_id, m.name))
    room = plan.room - frame
    if room < MIN_TRUNCATED:
        return None
    text = plan.counter.truncate(m.text, room)
    if not text:
        return None
    cut = Message(m.role, [TextPart(text)], m.tool_call_id, m.name)
    tokens = plan.counter.message(cut)
    if not plan.reserve(tokens):
        return None
    plan.last = tokens
    return cut


def _given_summaries(plan: Plan, summaries: Sequence[SummaryLike]) -> list[str]:
    kept = []
    for n, s in enumerate(summaries):
        text, id = (s, None) if isinstance(s, str) else (s.text, s.id)
        piece = Piece("summary", id or f"summary:{n}", text)
        if plan.add_piece(piece):
            kept.append(text)
        else:
            plan.leave("summary", piece.id, "budget", plan.piece_tokens(piece))
    return kept


def _rank_items(items: Sequence[ItemLike]) -> list[tuple[Piece, str]]:
    """(piece, the item's text) of each item, best score first; items without a score
    (a MemoryItem) come after scored ones, in their given order."""
    rows = []
    for n, entry in enumerate(items):
        if isinstance(entry, Hit):
            item, score = entry.item, entry.score
        elif isinstance(entry, MemoryItem):
            item, score = entry, -math.inf
        else:
            raise TypeError(f"items[{n}] must be a Hit or a MemoryItem, not {type(entry).__name__}")
        line = item.text if item.source is None else f"{item.text} [{cite(item)}]"
        rows.append((-score, n, Piece("item", item.id, line), item.text))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [(piece, text) for _, _, piece, text in rows]


def _older_messages(
    plan: Plan, msgs: list[Message], older: list[int], kept: dict[int, Message],
    ranked: list[tuple[Piece, str]], item_share: float, summary_tokens: int,
) -> tuple[int, int]:  # fmt: skip
    """Keep older messages, newest first, in what the items' reserve leaves; ``older``
    is left holding those that did not fit. With a summarizer (``summary_tokens`` > 0)
    and messages that do not all fit, room for their summary is set aside first.
    (the summary's room, 0 for none; the items' reserve)."""
    if not older:
        return 0, 0
    counter = plan.counter
    # An estimate: items that repeat a kept message will be dropped later, and what
    # they leave unused stays so (normalising the whole thread to know would cost more).
    wanted = sum(plan.piece_tokens(p) for p, _ in ranked)
    if wanted:
        wanted += plan.section_tokens("item")
    reserve = min(math.ceil(item_share * plan.room), wanted)
    lane = plan.room - reserve
    sizes = _sizes_within(counter, msgs, older, lane)  # stops past the lane: not all counted
    summary_room = 0
    if summary_tokens and (len(sizes) < len(older) or sum(sizes) > lane):
        room = min(summary_tokens, lane // 3)
        if room - plan.piece_overhead("summary") >= MIN_TRUNCATED:
            summary_room = room
            lane -= room
    fitted = 0
    for tokens in sizes:
        if tokens > lane:
            break
        lane -= tokens
        fitted += 1
    for i, tokens in zip(older[:fitted], sizes[:fitted], strict=True):
        plan.reserve(tokens)
        kept[i] = msgs[i]
        plan.include("message", f"message:{i}", tokens)
    del older[:fitted]
    return (summary_room if older else 0), reserve


def _sizes_within(
    counter: TokenCounter, msgs: list[Message], older: list[int], lane: int
) -> list[int]:
    """Token counts of ``older`` in order, up to the first that takes the total past
    ``lane`` (the rest cannot fit: counting them is what a cold cache pays for)."""
    sizes, total = [], 0
    for i in older:
        tokens = counter.message(msgs[i])
        sizes.append(tokens)
        total += tokens
        if total > lane:
            break
    return sizes


async def _summarise(
    plan: Plan, msgs: list[Message], older: list[int], kept: dict[int, Message],
    summarizer: Summarizer, room: int, reserve: int,
) -> tuple[str | None, str | None]:  # fmt: skip
    """Summarise the older messages that did not fit (``older``, newest first) into
    ``room`` tokens; those it stands for leave ``older``. What the summary did not use
    of its room goes to more of the newest of them, kept whole (the items' ``reserve``
    stays theirs). (summary, error)."""
    limit = room - plan.piece_overhead("summary")
    chosen = sorted(older)
    try:
        text = await summarizer.summarize([msgs[i] for i in chosen], max_tokens=limit)
    except Exception as exc:  # a model that is down must not stop the call it feeds
        return None, f"{type(exc).__name__}: {exc}"
    text = plan.counter.truncate(text.strip(), limit)
    if not text or not plan.add_piece(Piece("summary", "summary:generated", text)):
        return None, None
    summarised = older[:]
    older.clear()
    _keep_more(plan, msgs, summarised, kept, reserve)
    for i in sorted(summarised):
        plan.leave_unweighed(msgs[i], i, "summarized")
    return text, None


def _keep_more(
    plan: Plan, msgs: list[Message], older: list[int], kept: dict[int, Message], reserve: int
) -> None:
    """Keep more of ``older`` (newest first), whole, in the room beyond ``reserve``: what
    a summary shorter than its room gave back. They leave ``older``."""
    while older:
        i = older[0]
        tokens = plan.counter.message(msgs[i])
        if tokens > plan.room - reserve:
            return
        plan.reserve(tokens)
        kept[i] = msgs[i]
        plan.include("message", f"message:{i}", tokens)
        older.pop(0)


def _drop_orphans(plan: Plan, msgs: list[Message], kept: dict[int, Message]) -> None:
    """A tool result whose call is not in the context is refused by providers: drop
    leading tool messages of the kept turns."""
    for i in sorted(kept):
        if msgs[i].role != "tool":
            break
        del kept[i]
        plan.drop("message", f"message:{i}")


def _seen(
    task: str, system: str | None, given: list[str], summary: str | None,
    msgs: list[Message], kept: dict[int, Message],
) -> Seen:  # fmt: skip
    seen = Seen()
    seen.add(task, "task")
    if system:
        seen.add(system, "system")
    for n, text in enumerate(given):
        seen.add(text, f"summary:{n}")
    if summary:
        seen.add(summary, "summary:generated")
    for i in kept:
        seen.add(msgs[i].text, f"message:{i}")
    return seen


def _items(plan: Plan, ranked: list[tuple[Piece, str]], seen: Seen) -> None:
    """Items best first, each if it fits (a repeat of anything in the context is a
    duplicate); then the best one that did not fit, cut to the room left."""
    missed: list[Piece] = []
    for piece, text in ranked:
        same = seen.repeats(text)
        if same is not None:
            plan.leave("item", piece.id, "duplicate", plan.piece_tokens(piece), of=same)
        elif plan.add_piece(piece):
            seen.add(text, piece.id)
        else:
            missed.append(piece)
    if missed and plan.add_cut_piece(missed[0], MIN_TRUNCATED):
        missed = missed[1:]
    for piece in missed:
        plan.leave("item", piece.id, "budget", plan.piece_tokens(piece))
