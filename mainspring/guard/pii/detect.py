"""Finding personal data and credentials in text: emails, phone numbers, payment card
numbers (Luhn-checked, with a known issuer prefix), API keys and tokens, JWTs.

Each kind is one compiled pattern, run in a fixed order (keys and JWTs first, then
emails, cards, phones), each over the text the earlier ones left: a card number is not
also read as a phone number, an email's digits are gone before the phone pattern runs.
A candidate a pattern finds is checked before it is replaced (a card's checksum and
issuer, a phone's digit count) and kept when it is allowed (``allow``).

What is deliberately not a phone number: digits without a ``+`` prefix, a trunk ``0`` or
the grouping of a North American number (``(415) 555-2671``, ``415-555-2671``), so order
numbers, timestamps and dates stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import Final

KINDS: Final = ("key", "jwt", "email", "card", "phone")  # also the order they run in

_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|svcacct-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r")(?![\w-])"
    r"|(?<=[Bb]earer )[A-Za-z0-9._~+/-]{20,}=*"  # whatever follows "Bearer "
)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d-]|[.,]\d)")
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w-])"  # +44 20 7946 0958
    r"|(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])"  # (415) 555-2671, 415.555.2671
    r"|(?<![\w])0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\w-])"  # 020 7946 0958, 030-1234-5678
)
_DIGIT = re.compile(r"\d")


def luhn(digits: str) -> bool:
    """Whether ``digits`` pass the Luhn checksum (every card number does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer_known(digits: str) -> bool:
    """Whether ``digits`` start as a card of a known network does (Visa, Mastercard, Amex,
    Discover, JCB, Diners, UnionPay, Maestro) at a length it issues."""
    n, first = len(digits), digits[0]
    if first == "4":
        return n in (13, 16, 19)
    if first == "5":
        return 12 <= n <= 19
    if first == "2":
        return n == 16 and 2221 <= int(digits[:4]) <= 2720
    if first == "3":
        two, four = int(digits[:2]), int(digits[:4])
        if two in (34, 37):
            return n == 15
        return ((300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19) or (
            3528 <= four <= 3589 and 16 <= n <= 19
        )
    if first == "6":
        return 12 <= n <= 19
    return False


def is_card(candidate: str) -> bool:
    digits = "".join(_DIGIT.findall(candidate))
    seps = {c for c in candidate if not c.isdigit()}
    return (
        13 <= len(digits) <= 19
        and len(seps) <= 1  # "4111 1111 1111 1111" or "4111-...", not a mix
        and luhn(digits)
        and card_issuer_known(digits)
    )


def is_phone(candidate: str) -> bool:
    count = len(_DIGIT.findall(candidate))
    return (
        8 <= count <= 15
        if candidate.startswith("+")
        else 10 <= count <= 15 or (candidate.startswith("0") and 9 <= count <= 12)
    )


_CHECKS: Final[dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None, str]]] = {
    # kind: (pattern, check of a candidate, a character every match holds: a quick skip)
    "key": (_KEY, None, ""),
    "jwt": (_JWT, None, "eyJ"),
    "email": (_EMAIL, None, "@"),
    "card": (_CARD, is_card, ""),
    "phone": (_PHONE, is_phone, ""),
}


def check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(kinds)
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds of data {unknown}; choose from {', '.join(KINDS)}")
    return chosen


def redact_text(
    text: str,
    kinds: Collection[str],
    marker: Callable[[str], str],
    allowed: Callable[[str], bool] | None = None,
    counts: dict[str, int] | None = None,
) -> str:
    """``text`` with what ``kinds`` find replaced by ``marker(kind)``; ``counts`` (if
    given) adds up what was replaced, by kind."""
    for kind in KINDS:
        if kind not in kinds:
            continue
        pattern, check, needs = _CHECKS[kind]
        if needs and needs not in text:
            continue
        shown = marker(kind)

        def replace(m: re.Match[str], kind: str = kind, check: Callable[[str], bool] | None = check,
                    shown: str = shown) -> str:  # fmt: skip
            found = m.group(0)
            if (check is not None and not check(found)) or (allowed is not None and allowed(found)):
                return found
            if counts is not None:
                counts[kind] = counts.get(kind, 0) + 1
            return shown

        text = pattern.sub(replace, text)
    return text
