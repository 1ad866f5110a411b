"""The screen at the effect gate: ``Runtime(gates=[Screen(...)])``.

* ``after`` a ``tool`` or ``memory`` effect (a tool's output, retrieved documents): the
  result is validated and screened under the source ``tool:<name>`` / ``memory:<name>``.
* ``before`` a ``model`` effect: the request's ``user`` and ``tool`` messages are screened
  (``user``, ``tool:<name>``), so user input and anything a node put in a prompt itself
  meets the same rules.

A flagged value is quarantined: it never reaches the model (nor ``effect_finished``);
the journal gets an ``effect_decided`` event naming the screen, the source, the checks
that fired and the original's sha256 and size (the original itself goes only to
``on_quarantine``, if given); a WARNING goes to the ``mainspring.guard.screen`` logger;
then, per the source's rule, the model reads a placeholder and the run goes on, or the
run stops with ``QuarantinedError``.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ...engine.gate import Deny, Effect, Outcome, Rewrite
from .classifier import Classifier
from .errors import QuarantinedError
from .rules import Rule
from .screen import Screener, Verdict, fingerprint
from .validation import texts_of

log = logging.getLogger("mainspring.guard.screen")
_SCREENED_ROLES = ("user", "tool")
_VALIDATION = frozenset({"size", "kind", "schema"})


class Quarantined(msgspec.Struct, frozen=True):
    """What was withheld: where, why, and the original (kept out of the model's context)."""

    run_id: str
    effect: str
    source: str
    checks: tuple[str, ...]
    details: tuple[str, ...]
    sha256: str
    size: int
    action: str
    original: Any = None


# ctx.memory's operations whose results bring no stored text back (ids, versions, counts,
# shared state the thread's own agents keep): not screened. Every other memory effect is
# (recall, messages, get, and a node's own retrieval made as an effect of kind memory).
_MEMORY_UNSCREENED = frozenset({
    "memory.set", "memory.delete", "memory.append", "memory.shared",
    "memory.compare_and_set", "memory.update", "memory.remember", "memory.forget",
})  # fmt: skip


class Screen:
    """The screening gate hook (see the module's docstring). ``rules`` by source name
    (``user``, ``tool``, ``tool:<name>``, ``memory``, ``*``; None turns one off);
    ``on_quarantine`` receives each :class:`Quarantined` record with its original;
    ``keep`` recent records stay in :attr:`quarantined`."""

    name = "screen"

    def __init__(
        self,
        rules: Mapping[str, Rule | None] | None = None,
        *,
        classifier: Classifier | None = None,
        on_quarantine: Callable[[Quarantined], None] | None = None,
        keep: int = 256,
    ) -> None:
        self.screener = Screener(rules, classifier=classifier)
        self.on_quarantine = on_quarantine
        self.quarantined: deque[Quarantined] = deque(maxlen=keep)

    @property
    def stats(self) -> Any:
        return self.screener.stats

    def check(self, value: Any, source: str) -> Verdict:
        return self.screener.check(value, source)

    # -- after: tool outputs, retrieved documents -------------------------------------

    def after(self, effect: Effect, outcome: Outcome) -> Outcome | None:
        if outcome.error is not None or effect.kind not in ("tool", "memory"):
            return None
        if effect.kind == "memory" and effect.name in _MEMORY_UNSCREENED:
            return None
        source = effect.name if ":" in effect.name else f"{effect.kind}:{effect.name}"
        verdict = self.screener.check(outcome.result, source)
        if not verdict.flagged:
            return None
        rule = self.screener.rule(source)
        assert rule is not None  # a source turned off is never flagged
        failed = any(f.check in _VALIDATION for f in verdict.findings)
        if rule.on_flag == "placeholder" and isinstance(outcome.result, list) and not failed:
            kept = self._items(effect, source, rule, outcome)
            if kept is not None:
                return kept
        note = self._quarantine(effect, source, verdict, outcome.result, rule)
        if rule.on_flag == "stop":
            error = QuarantinedError(_stopped(source, verdict))
            return Outcome(error=error, usage=outcome.usage, note=note)
        text = rule.placeholder.format(source=source, why=verdict.why)
        return Outcome(text, usage=outcome.usage, note=note)

    def _items(self, effect: Effect, source: str, rule: Rule, outcome: Outcome) -> Outcome | None:
        """A list result (retrieved documents, search hits) that passed validation, with
        only its flagged items withheld; None when no item alone is flagged (an injection
        split across items: the whole list is withheld then)."""
        items = list(outcome.result)
        notes = []
        for i, item in enumerate(items):
            verdict = self.screener.screen_text("\n".join(texts_of(item)), source, rule)
            if verdict.flagged:
                note = json.loads(self._quarantine(effect, source, verdict, item, rule))
                notes.append({"item": i, **note})
                items[i] = rule.placeholder.format(source=f"{source} (item {i})", why=verdict.why)
        if not notes:
            return None
        return Outcome(items, usage=outcome.usage, note=json.dumps(notes, ensure_ascii=True))

    # -- before: what a model request carries --------------------------------------------

    def before(self, effect: Effect) -> Deny | Rewrite | None:
        if effect.kind != "model":
            return None
        messages = effect.args.get("messages")
        if not isinstance(messages, list):
            return None
        changed: list[Any] | None = None
        notes: list[str] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _SCREENED_ROLES:
                continue
            source = "user" if message["role"] == "user" else f"tool:{message.get('name', '')}"
            rule = self.screener.rule(source)
            if rule is None:
                continue
            new_parts, flagged = self._screen_parts(effect, source, rule, message)
            if not flagged:
                continue
            if rule.on_flag == "stop":
                digest = self.quarantined[-1].sha256[:16] if self.quarantined else ""
                return Deny(f"{_stopped(source, flagged[0])} (sha256 {digest})")
            notes.extend(v.why for v in flagged)
            changed = changed if changed is not None else list(messages)
            changed[i] = {**message, "content": new_parts}
        if changed is None:
            return None
        reason = f"quarantined in the request: {'; '.join(notes)} (see the screen's notes)"
        return Rewrite({**effect.args, "messages": changed}, reason)

    def _screen_parts(
        self, effect: Effect, source: str, rule: Rule, message: dict[str, Any]
    ) -> tuple[list[Any], list[Verdict]]:
        parts = message.get("content")
        if isinstance(parts, str):
            parts = [{"type": "text", "text": parts}]
        if not isinstance(parts, list):
            return [], []
        out, flagged = [], []
        for part in parts:
            text = (
                part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            )
            if not isinstance(text, str):
                out.append(part)
                continue
            # A tool's output was validated whole by after(); here its text meets the
            # injection screen only. A user's message meets its whole rule.
            if source == "user":
                verdict = self.screener.check(text, source)
            else:
                verdict = self.screener.screen_text(text, source, rule)
            if verdict.flagged:
                flagged.append(verdict)
                self._quarantine(effect, source, verdict, text, rule)
                part = {**part, "text": rule.placeholder.format(source=source, why=verdict.why)}
            out.append(part)
        return out, flagged

    # -- recording -------------------------------------------------------------------------

    def _quarantine(
        self, effect: Effect, source: str, verdict: Verdict, original: Any, rule: Rule
    ) -> str:
        digest, size = fingerprint(original)
        record = Quarantined(
            effect.run_id, effect.name, source, tuple(f.check for f in verdict.findings),
            tuple(f.detail for f in verdict.findings), digest, size, rule.on_flag, original,
        )  # fmt: skip
        self.quarantined.append(record)
        if self.on_quarantine is not None:
            self.on_quarantine(record)
        note = {
            "quarantined": source,
            "checks": list(record.checks),
            "details": list(record.details),
            "sha256": digest,
            "bytes": size,
            "action": rule.on_flag,
        }
        if verdict.score is not None:
            note["score"] = round(verdict.score, 3)
        text = json.dumps(note, ensure_ascii=True)
        log.warning(
            "screen quarantined %s in run %s (%s): %s",
            source, effect.run_id, rule.on_flag, verdict.why,
            extra={"run_id": effect.run_id, "effect": effect.name, "screen": note},
        )  # fmt: skip
        return text


def _stopped(source: str, verdict: Verdict) -> str:
    details = "; ".join(f"{f.check}: {f.detail}" for f in verdict.findings)
    return (
        f"the screen quarantined what {source} gave and its rule says stop ({details}); "
        "the run stops here. Review the journal's effect_decided event, and change the "
        "rule to on_flag='placeholder' to go on without it"
    )
