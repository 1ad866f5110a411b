"""The screen: validation, then heuristics, then the classifier, for one value of a source.

``Screen.check(value, source)`` is usable on its own (e.g. on documents a node retrieves
itself); as a gate hook (``hook.py``) it screens what tools, memory and users give a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from .classifier import Classifier, shipped
from .errors import ScreenValidationError
from .heuristics import run as run_heuristics
from .rules import Rule, rule_for
from .validation import check_schema, texts_of, validate

_CACHE: Final = 4096  # verdicts kept per screen (a conversation's messages recur every turn)


class Finding(msgspec.Struct, frozen=True):
    """One reason to flag: the check (``size``/``kind``/``schema``, a heuristic's name, or
    ``classifier``) and what it found."""

    check: str
    detail: str


class Verdict(msgspec.Struct, frozen=True):
    """What the screen made of one value of one source."""

    source: str
    findings: tuple[Finding, ...] = ()
    score: float | None = None  # the classifier's probability of injection, when it ran

    @property
    def flagged(self) -> bool:
        return bool(self.findings)

    @property
    def why(self) -> str:
        return ", ".join(f.check for f in self.findings)


class Stats(msgspec.Struct):
    screened: int = 0
    flagged: int = 0
    by_check: dict[str, int] = msgspec.field(default_factory=dict)


class Screener:
    """Rules by source and the classifier; screens values and remembers recent verdicts."""

    def __init__(
        self,
        rules: Mapping[str, Rule | None] | None = None,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        self.rules = dict(rules or {})
        for rule in self.rules.values():
            if rule is not None:
                check_schema(rule.schema)
        self._classifier = classifier
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self.stats = Stats()

    @property
    def classifier(self) -> Classifier:
        if self._classifier is None:
            self._classifier = shipped()
        return self._classifier

    def rule(self, source: str) -> Rule | None:
        return rule_for(self.rules, source)

    def check(self, value: Any, source: str) -> Verdict:
        """Validate ``value`` and screen its text for injection under ``source``'s rule."""
        rule = self.rule(source)
        if rule is None:
            return Verdict(source)
        problem = validate(value, rule, source)
        if problem is not None:
            return self._count(Verdict(source, (Finding(_check_of(problem), problem),)))
        if not rule.injection:
            return self._count(Verdict(source))
        text = value if isinstance(value, str) else "\n".join(texts_of(value))
        return self.screen_text(text, source, rule)

    def screen_text(self, text: str, source: str, rule: Rule | None = None) -> Verdict:
        """The injection screen alone (heuristics, then the classifier) on one text."""
        rule = rule or self.rule(source)
        if rule is None or not rule.injection or not text.strip():
            return Verdict(source)
        key = (source, text)
        hit = self._verdicts.get(key)
        if hit is not None:
            return hit
        findings = [Finding(name, detail) for name, detail in run_heuristics(text, rule.heuristics)]
        score = None
        if rule.classifier:
            model = self.classifier
            score = model.probability(text)
            threshold = rule.threshold if rule.threshold is not None else model.threshold
            if score >= threshold:
                findings.append(Finding("classifier", f"probability {score:.2f} >= {threshold}"))
        verdict = self._count(Verdict(source, tuple(findings), score))
        if len(self._verdicts) >= _CACHE:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def validate(self, value: Any, source: str) -> None:
        """Raise ScreenValidationError (saying what is wrong) if ``value`` fails ``source``'s
        size, kind or schema rule."""
        rule = self.rule(source)
        problem = None if rule is None else validate(value, rule, source)
        if problem is not None:
            raise ScreenValidationError(problem)

    def _count(self, verdict: Verdict) -> Verdict:
        stats = self.stats
        stats.screened += 1
        if verdict.findings:
            stats.flagged += 1
            for f in verdict.findings:
                stats.by_check[f.check] = stats.by_check.get(f.check, 0) + 1
        return verdict


def _check_of(problem: str) -> str:
    if "over its cap" in problem:
        return "size"
    if "content; its rule lets in" in problem:
        return "kind"
    return "schema"


def fingerprint(value: Any) -> tuple[str, int]:
    """The sha256 and size of a value as JSON (how the journal names what it withheld)."""
    try:
        raw = value.encode() if isinstance(value, str) else msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        raw = repr(value).encode()
    return hashlib.sha256(raw).hexdigest(), len(raw)
