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
import unicodedata
from collections.abc import Callable, Collection, Iterable
from typing import Final

KINDS: Final = ("key", "jwt", "email", "card", "phone")  # also the order they run in

# Every pattern starts with a literal or a small character class and looks behind only
# after its first character: the regex engine then skips to the places worth trying,
# where a leading look-behind would make it try every position (10x slower on prose).
_KEYS: Final = tuple(
    (literal, re.compile(pattern), keep)
    for literal, pattern, keep in (
        (
            "sk-",
            r"sk-(?<![\w-]sk-)(?:proj-|svcacct-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}(?![\w-])",
            0,
        ),
        ("gh", r"gh(?<![\w-]gh)[pousr]_[A-Za-z0-9]{36,255}(?![\w-])", 0),
        ("github_pat_", r"github_pat_(?<![\w-]github_pat_)[A-Za-z0-9_]{22,255}(?![\w-])", 0),
        ("A", r"A(?<![\w-]A)(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[A-Z0-9]{16}(?![\w-])", 0),
        ("xox", r"xox(?<![\w-]xox)[abposr]-[A-Za-z0-9-]{10,}(?![\w-])", 0),
        ("AIza", r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}(?![\w-])", 0),
        ("k_", r"[sr]k_(?<![\w-].k_)(?:live|test)_[A-Za-z0-9]{16,}(?![\w-])", 0),
        ("glpat-", r"glpat-(?<![\w-]glpat-)[A-Za-z0-9_-]{20,}(?![\w-])", 0),
        ("earer ", r"earer (?<=[Bb]earer )[A-Za-z0-9._~+/-]{20,}=*", 6),  # after "Bearer "
    )
)
_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}$")  # an address's part before its "@"
# Numbers are matched as written, in any script's digits (``\d``: fullwidth digits
# too) and with the separators that look like a space or a hyphen (no-break, figure,
# narrow and ideographic spaces, the invisible zero-width ones; the Unicode dashes and
# minus): "4111\u00a01111\u00a01111\u00a01111" is a card. The checks (Luhn, the issuer,
# digit counts) read the match folded to ASCII (:func:`fold`), the original is replaced.
_SP: Final = " \u00a0\u1680\u2000-\u200d\u202f\u205f\u2060\u3000\ufeff"
_DASH: Final = "\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d"
_SEP: Final = f"[{_SP}{_DASH}]"  # a space or a hyphen, in one of their forms
_DOT: Final = f"[.{_SP}{_DASH}]"  # ... or a dot
# A run of digits and separators (a card, a phone number, or several things in a row).
# (10 characters at least: no card or phone number is shorter, so most dates are not tried)
_NUMBER = re.compile(rf"[(\d](?<![\w.,+(-][(\d])[\d().{_SP}{_DASH}]{{8,}}\d\)?(?![\w-]|[.,]\d)")
_GROUPS: Final = rf"\d{{1,3}}(?:{_DOT}?\(?\d{{1,4}}\)?){{2,6}}(?![\w-])"  # after the "+"
# a literal first (not a class of "+" and the fullwidth one): the engine skips to each
_INTERNATIONAL = re.compile(rf"\+(?<![\w+\uff0b]\+){_GROUPS}")
_INTERNATIONAL_WIDE = re.compile(rf"\uff0b(?<![\w+\uff0b]\uff0b){_GROUPS}")
_CARD = re.compile(rf"\d(?:{_SEP}?\d){{12,18}}")
_PHONE = re.compile(
    rf"\(?\d{{3}}\)?{_DOT}\d{{3}}{_DOT}\d{{4}}"  # (415) 555-2671, 415.555.2671
    rf"|[0\uff10]\d{{1,4}}{_SEP}\d{{3,4}}{_SEP}?\d{{3,4}}"  # 020 7946 0958, 030-1234-5678
)


class _Folding(dict[int, int]):
    """``str.translate``'s table for :func:`fold`, filled as characters are met."""

    def __missing__(self, code: int) -> int:
        ch = chr(code)
        digit = unicodedata.decimal(ch, -1)
        if digit >= 0:
            to = 48 + digit
        elif ch.isspace() or unicodedata.category(ch) == "Cf":  # spaces, zero-width ones
            to = 32
        elif unicodedata.category(ch) == "Pd" or ch == "\u2212":
            to = 45
        else:
            norm = unicodedata.normalize("NFKC", ch)  # fullwidth "(", ")", ".", "+"
            to = ord(norm) if len(norm) == 1 and norm in "().+" else code
        if len(self) < 4096:
            self[code] = to
        return to


_FOLDING: Final = _Folding()


def fold(text: str) -> str:
    """``text`` with digits of any script as ASCII digits, and spaces, hyphens, dashes
    and fullwidth punctuation as their ASCII forms, one character for one (so a match's
    span is the same in both); ``text`` itself when it is ASCII."""
    return text if text.isascii() else text.translate(_FOLDING)


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


# What every find holds: a digit, an "@", or the start of a key or a JWT.
_ANYTHING = re.compile(
    r"[\d@]|sk-|gh[pousr]_|github_pat_|A[KSGIRN][IPOD]A|xox|AIza|k_live_|k_test_|glpat-|earer |eyJ"
)
_SEPARATORS: Final = str.maketrans("", "", " -().")


def is_card(candidate: str) -> bool:
    candidate = fold(candidate)
    digits = candidate.translate(_SEPARATORS)
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    if (" " in candidate) + ("-" in candidate) > 1:
        return False  # "4111 1111 1111 1111" or "4111-...", not a mix
    return luhn(digits) and card_issuer_known(digits)


def is_phone(candidate: str) -> bool:
    candidate = fold(candidate)
    count = len(candidate.translate(_SEPARATORS).replace("+", ""))
    return (
        8 <= count <= 15
        if candidate.startswith("+")
        else 10 <= count <= 15 or (candidate.startswith("0") and 9 <= count <= 12)
    )


def check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(kinds)
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds of data {unknown}; choose from {', '.join(KINDS)}")
    return chosen


class _Pass:
    """One redaction of a text: the marker, the allow-list and the counts."""

    __slots__ = ("allowed", "counts", "marker")

    def __init__(self, marker: Callable[[str], str], allowed: Callable[[str], bool] | None,
                 counts: dict[str, int] | None) -> None:  # fmt: skip
        self.marker, self.allowed, self.counts = marker, allowed, counts

    def hit(self, kind: str, found: str) -> str | None:
        """The marker for ``found``, or None when it is allowed."""
        if self.allowed is not None and self.allowed(found):
            return None
        if self.counts is not None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        return self.marker(kind)

    def sub(self, pattern: re.Pattern[str], kind: str, text: str, keep: int = 0,
            check: Callable[[str], bool] | None = None) -> str:  # fmt: skip
        def replace(m: re.Match[str]) -> str:
            found = m.group(0)
            if keep > 0:  # the first characters are context ("Bearer "), not the secret
                head, found = found[:keep], found[keep:]
            else:
                head = ""
            if check is not None and not check(found):
                return m.group(0)
            shown = self.hit(kind, found)
            return m.group(0) if shown is None else head + shown

        return pattern.sub(replace, text)

    def numbers(self, text: str, kinds: Collection[str]) -> str:
        """Cards and phone numbers, in one pass over the runs of digits."""
        card, phone = "card" in kinds, "phone" in kinds

        def replace(m: re.Match[str]) -> str:
            found = m.group(0)
            if card and is_card(found):
                return self.hit("card", found) or found
            if phone and _PHONE.fullmatch(found) and is_phone(found):
                return self.hit("phone", found) or found
            if len(found) < 14:
                return found
            # several things in a row ("2026-11-30 415-555-2671"): each kind on its own
            if card:
                found = self.sub(_CARD, "card", found, check=_whole_card)
            if phone:
                found = self.sub(_PHONE, "phone", found, check=is_phone)
            return found

        return _NUMBER.sub(replace, text)

    def emails(self, text: str) -> str:
        """Addresses, found from their "@" (the engine then skips straight to each)."""
        out, last, at = [], 0, text.find("@")
        while at >= 0:
            head = _LOCAL.search(text, max(last, at - 64), at)
            start = head.start() if head is not None else at
            m = _EMAIL.match(text, start) if head is not None else None
            if m is not None and (start == 0 or not _in_local_part(text[start - 1])):
                shown = self.hit("email", m.group(0))
                if shown is not None:
                    out.append(text[last:start])
                    out.append(shown)
                    last = m.end()
            at = text.find("@", max(at + 1, last))
        out.append(text[last:])
        return "".join(out)


def _whole_card(found: str) -> bool:
    return is_card(found)


def _in_local_part(ch: str) -> bool:
    return ch.isalnum() or ch in "._%+-"


def redact_text(
    text: str,
    kinds: Collection[str],
    marker: Callable[[str], str],
    allowed: Callable[[str], bool] | None = None,
    counts: dict[str, int] | None = None,
) -> str:
    """``text`` with what ``kinds`` find replaced by ``marker(kind)``; ``counts`` (if
    given) adds up what was replaced, by kind. Keys and JWTs go first, then emails, then
    numbers (international phone numbers, cards and the other phone shapes)."""
    if len(text) <= 512 and _ANYTHING.search(text) is None:
        return text  # the common short field: nothing any kind could start with
    run = _Pass(marker, allowed, counts)
    if "key" in kinds:
        for literal, pattern, keep in _KEYS:
            if literal in text:
                text = run.sub(pattern, "key", text, keep)
    if "jwt" in kinds and "eyJ" in text:
        text = run.sub(_JWT, "jwt", text)
    if "email" in kinds and "@" in text:
        text = run.emails(text)
    if "phone" in kinds:
        if "+" in text:
            text = run.sub(_INTERNATIONAL, "phone", text, check=is_phone)
        if "\uff0b" in text:  # a fullwidth plus
            text = run.sub(_INTERNATIONAL_WIDE, "phone", text, check=is_phone)
    if "card" in kinds or "phone" in kinds:
        text = run.numbers(text, kinds)
    return text
