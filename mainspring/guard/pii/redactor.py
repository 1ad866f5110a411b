"""The PII redactor: a gate hook for what effects record, and a function for exports.

    redactor = Redactor(
        Rule(skip=["order_id"], allow=[re.compile(r".*@acme\\.com")]),
        effects={"tool:crm.*": Rule(mask=["result.notes"]), "model:*": Rule(kinds=["key", "card"])},
    )
    Runtime(store, gates=[redactor], ...)     # recorded arguments and tool results
    audit.export(..., redact=redactor)         # any record: record -> record
    setup_tracing(..., redact=redactor.attribute)

Arguments are redacted as the journal records them (``redact(effect, args)``: the call
itself gets them as they were). A result is redacted *before* anyone sees it, by the
``after`` hook replacing the call's outcome: the node, an agent's model and the journal
all get the same redacted value, so a resumed or replayed run sees what the live run
saw (a result redacted only in the journal would change under a resumed node). The
change is journaled as an ``effect_decided`` event whose note counts what was replaced,
by kind (never the values). An error whose message (or chain) holds personal data is
raised again, of its type, with the message redacted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from fnmatch import fnmatchcase
from typing import Any

from ...engine.gate import Effect, Outcome
from .._errors import chain, rebuilt
from .detect import KINDS, card_issuer_known, luhn, redact_text
from .rules import MASKED, Rule

_SHORTEST = 6  # no kind fits in fewer characters ("a@b.co")


class Redactor:
    """Finds and replaces personal data and credentials (see :mod:`.detect`) as ``rule``
    and the per-effect ``effects`` rules (patterns of effect names, the first that
    matches wins) say. ``args``: the effect kinds whose recorded arguments are redacted
    (None: all); ``results``: those whose results are; ``errors``: whether error
    messages of those are too; ``marker``: what replaces a find (``{kind}``)."""

    name = "pii-redaction"

    def __init__(
        self,
        rule: Rule | None = None,
        *,
        effects: Mapping[str, Rule] | None = None,
        args: Collection[str] | None = None,
        results: Collection[str] = ("tool",),
        errors: bool = True,
        marker: str = "[{kind}]",
    ) -> None:
        self.rule = rule if rule is not None else Rule()
        self.effects = dict(effects or {})
        for pattern, r in self.effects.items():
            if not isinstance(r, Rule):
                raise TypeError(f"Redactor(effects={{{pattern!r}: ...}}) takes a Rule(...)")
        self.args = None if args is None else frozenset(args)
        self.results = frozenset(results)
        self.errors = errors
        if "{kind}" not in marker:
            raise ValueError(f"Redactor(marker={marker!r}) must hold '{{kind}}'")
        self._markers = {k: marker.format(kind=k) for k in KINDS}
        self._marker: Callable[[str], str] = self._markers.__getitem__
        self._rules: dict[str, Rule] = {}

    def rule_for(self, effect_name: str) -> Rule:
        """The rule of an effect (by its name: ``tool:send_email``, ``model:fast``, ...)."""
        found = self._rules.get(effect_name)
        if found is None:
            found = next(
                (r for p, r in self.effects.items() if fnmatchcase(effect_name, p)), self.rule
            )
            if len(self._rules) < 4096:
                self._rules[effect_name] = found
        return found

    # -- as a function ---------------------------------------------------------------------

    def __call__(self, record: Any) -> Any:
        """``record`` redacted (an export's record -> record; one naming an effect in its
        ``name`` gets that effect's rule)."""
        name = record.get("name") if isinstance(record, Mapping) else None
        rule = self.rule_for(name) if isinstance(name, str) else self.rule
        return self.value(record, rule)

    def attribute(self, attribute: str, value: Any) -> Any:
        """For telemetry's ``Capture(redact=...)`` / ``setup_tracing(redact=...)``."""
        return self.value(value)

    def text(self, text: str, rule: Rule | None = None) -> str:
        rule = rule or self.rule
        return redact_text(text, rule.kinds, self._marker, rule.allowed if rule.allow else None)

    def value(
        self,
        value: Any,
        rule: Rule | None = None,
        path: str = "",
        counts: dict[str, int] | None = None,
    ) -> Any:
        """JSON data with each field redacted as ``rule`` says for its path."""
        rule = rule or self.rule
        action, kinds = rule.at(path)
        if action == "leave":
            return value
        if action == "mask":
            if counts is not None:
                counts["masked"] = counts.get("masked", 0) + 1
            return MASKED
        if isinstance(value, str):
            if not kinds or len(value) < _SHORTEST:
                return value
            allowed = rule.allowed if rule.allow else None
            return redact_text(value, kinds, self._marker, allowed, counts)
        if isinstance(value, dict):
            prefix = f"{path}." if path else ""
            return {k: self.value(v, rule, f"{prefix}{k}", counts) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, rule, path, counts) for v in value]
        if type(value) is int and "card" in kinds and 10**11 < value < 10**19:
            digits = str(value)  # a card number kept as a number
            if luhn(digits) and card_issuer_known(digits):
                if counts is not None:
                    counts["card"] = counts.get("card", 0) + 1
                return self._marker("card")
        return value

    # -- as a gate hook --------------------------------------------------------------------

    def redact(self, effect: Effect, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """The arguments as the journal records them."""
        if self.args is not None and effect.kind not in self.args:
            return args
        redacted: Mapping[str, Any] = self.value(dict(args), self.rule_for(effect.name), "args")
        return redacted

    def redact_text(self, effect: Effect, text: str) -> str:
        """A decision's reason or a denial's message about ``effect`` (field ``reason`` of
        its rule): such text may quote the arguments, so it is redacted whatever ``args``
        says."""
        if len(text) < _SHORTEST:
            return text
        redacted: str = self.value(text, self.rule_for(effect.name), "reason")
        return redacted

    def after(self, effect: Effect, outcome: Outcome) -> Outcome | None:
        """The outcome with its result (and error message) redacted; None when nothing was."""
        if effect.kind not in self.results:
            return None
        rule = self.rule_for(effect.name)
        counts: dict[str, int] = {}
        result = outcome.result
        if result is not None:
            result = self.value(result, rule, "result", counts)
        error = outcome.error
        if error is not None and self.errors and isinstance(error, Exception):
            error = self._error(error, rule, counts)
        if not counts and error is outcome.error:
            return None
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "its chain"
        where = "error" if outcome.error is not None else "result"
        return Outcome(result, error, outcome.usage, note=f"redacted {found} in the {where}")

    def _error(self, error: Exception, rule: Rule, counts: dict[str, int]) -> Exception:
        action, kinds = rule.at("error")
        if action != "scan" or not kinds:
            return error
        allowed = rule.allowed if rule.allow else None
        texts = [str(e) for e in chain(error)]
        if all(redact_text(t, kinds, self._marker, allowed) == t for t in texts):
            return error
        message = redact_text(str(error), kinds, self._marker, allowed, counts)
        return rebuilt(error, message)
