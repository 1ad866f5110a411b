"""Heuristic detectors of prompt injection: each a pure function of a text that returns a
short account of what it found, or None. Written for the attacks the literature names
(instructions to ignore earlier ones, role and system impersonation, hidden characters,
exfiltration through markdown images, forged tool calls, encoded payloads, prompt
leaking, persona jailbreaks), each kept narrow enough not to fire on ordinary support
traffic, documentation or JSON tool results (tests/test_screen_heuristics.py has a
positive and a negative case for each).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from typing import Final

Detector = Callable[[str], str | None]
_I: Final = re.IGNORECASE

_IGNORE: Final = re.compile(
    r"\b(ignore|disregard|forget|override|skip|bypass|do not (follow|obey)|stop following)\b"
    r"[\s,]+(all|any|each|every|the|your|my|these|those)?[\s,]*"
    r"(of\s+)?(the\s+|your\s+)?(previous|prior|above|earlier|preceding|foregoing|original|initial|"
    r"system|following)\s+(and\s+following\s+)?"
    r"(instructions?|rules|directions|prompts?|guidelines|directives|commands|context|orders|"
    r"iunstructions)",
    _I,
)


def ignore_instructions(text: str) -> str | None:
    """'Ignore all previous instructions and ...' and its synonyms."""
    m = _IGNORE.search(text)
    return None if m is None else f"asks to ignore earlier instructions: {m.group(0)[:60]!r}"


_CHAT_TOKENS: Final = re.compile(
    r"<\|(im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>"
    r"|\[/?INST\]|<</?SYS>>|###\s*\(?system[_ ]message\)?",
    _I,
)
_ROLE_LINE: Final = re.compile(
    r"(^|\n)\s*[\[<(]?\s*(system|assistant|developer|admin(istrator)?)\s*[\]>)]?\s*(:|message:)\s*"
    r"(?=.{0,200}\b(you (are|must|will|should)|ignore|new instructions|from now on|"
    r"do not (tell|mention|reveal)|respond only|reply only|maintenance mode))",
    _I | re.S,
)


def role_impersonation(text: str) -> str | None:
    """Chat-template tokens, or a 'System:' line that gives the model orders."""
    m = _CHAT_TOKENS.search(text) or _ROLE_LINE.search(text)
    return None if m is None else f"impersonates a chat role: {m.group(0).strip()[:40]!r}"


_ZERO_WIDTH: Final = re.compile("[\u200b\u200c\u200e\u200f\u2060-\u2064\u180e]")
_BIDI: Final = re.compile("[\u202a-\u202e\u2066-\u2069]")
_TAGS: Final = re.compile("[\U000e0001\U000e0020-\U000e007f]+")


def hidden_characters(text: str) -> str | None:
    """Zero-width characters, bidirectional overrides, and Unicode tag characters (which
    spell invisible ASCII that models read); a flag emoji's tag sequence is allowed."""
    if text.isascii():
        return None
    tags = [m for m in _TAGS.finditer(text) if not _is_flag(text, m.start(), m.end())]
    if tags:
        hidden = "".join(chr(ord(c) - 0xE0000) for c in tags[0].group(0))
        return f"hides text in Unicode tag characters: {hidden[:40]!r}"
    if _BIDI.search(text):
        return "holds bidirectional override characters"
    zw = len(_ZERO_WIDTH.findall(text))
    if zw >= 3:
        return f"holds {zw} zero-width characters"
    return None


def _is_flag(text: str, start: int, end: int) -> bool:
    # A subdivision flag: U+1F3F4, up to 6 tag letters, U+E007F (cancel tag)
    return start > 0 and text[start - 1] == "\U0001f3f4" and end - start <= 7


_IMAGE: Final = re.compile(r"!\[[^\]]{0,200}\]\(\s*(https?://[^)\s]+)", _I)
_HTML_IMG: Final = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?(https?://[^\"'\s>]+)", _I)
_PLACEHOLDER: Final = re.compile(r"[{<$\[]|%7b|%24|=\s*$")
_LONG_VALUE: Final = re.compile(r"[?&][^=&]{1,30}=[A-Za-z0-9+/%_-]{40,}")
_RENDER_ASK: Final = re.compile(
    r"\b(include|append|add|render|embed|output|insert|show|display)\b.{0,80}"
    r"(!\[|<img|\bimage\b|\bpixel\b).{0,200}\b(conversation|chat|history|email|password|"
    r"key|token|secret|summary|data|answer|url-?encoded|base64)",
    _I | re.S,
)


def exfiltration_link(text: str) -> str | None:
    """A markdown or HTML image whose URL carries a placeholder to fill or a long encoded
    value, or a request to render an image with data in it (data leaves when the client
    loads the image). A plain badge or picture is not flagged."""
    for m in (*_IMAGE.finditer(text), *_HTML_IMG.finditer(text)):
        url = m.group(1)
        query = url.partition("?")[2]
        if (query and _PLACEHOLDER.search(query)) or _LONG_VALUE.search(url):
            return f"an image link that carries data out: {url[:60]!r}"
    m2 = _RENDER_ASK.search(text)
    if m2 is not None:
        return f"asks to render an image with data: {m2.group(0)[:60]!r}"
    return None


_TOOL_JSON: Final = re.compile(
    r"[\"'](tool_calls?|function_call|tool_use)[\"']\s*:|<\|?/?(tool_call|function_call|tool_use)"
    r"\|?>|\"role\"\s*:\s*\"(assistant|system|tool)\"",
    _I,
)
_CALL_ASK: Final = re.compile(
    r"\b(you must|you should|now|please|immediately|then)\s+(immediately\s+)?(call|invoke|use|run|"
    r"execute)\s+the\s+(tool|function)\s+`?\w+`?\s+(with|using)\b",
    _I,
)


def tool_call_forging(text: str) -> str | None:
    """Text shaped like a model's tool call or a chat message (a JSON ``tool_calls`` key,
    a ``<tool_call>`` tag, a ``"role": "assistant"`` object), or an order to call a tool."""
    m = _TOOL_JSON.search(text) or _CALL_ASK.search(text)
    return None if m is None else f"forges or orders a tool call: {m.group(0)[:50]!r}"


_B64: Final = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_HEX: Final = re.compile(r"\b(?:[0-9a-fA-F]{2}){20,}\b")
_DECODE_ASK: Final = re.compile(
    r"\b(decode|decrypt|translate|convert|read|unscramble)\b.{0,60}\b(base64|rot-?13|hex|binary|"
    r"cipher|encoded)\b.{0,60}\b(follow|execute|do what|obey|carry out|run|act on|instructions?)",
    _I | re.S,
)
_ENCODINGS: Final = ("base64", "rot", "hex", "binary", "cipher", "encoded")
_DECODED_CUES: Final = (ignore_instructions, role_impersonation, tool_call_forging)


def encoded_payload(text: str) -> str | None:
    """An order to decode something and follow it, or base64/hex/rot13 that decodes to an
    injection (hashes and binary blobs decode to noise and are left alone)."""
    low = text.lower()
    m = _DECODE_ASK.search(text) if any(w in low for w in _ENCODINGS) else None
    if m is not None:
        return f"asks to decode and follow a payload: {m.group(0)[:60]!r}"
    rot13 = "rot13" in low or "rot-13" in low
    if rot13 and any(cue(codecs.decode(text, "rot13")) for cue in _DECODED_CUES):
        return "rot13 text that decodes to an injection"
    # Only whitespace-free runs of 24+ characters can hold a blob: split (in C) first,
    # rather than try the patterns at every position of a long text.
    long_runs = [t for t in text.split() if len(t) >= 24]
    if not long_runs:
        return None
    runs = " ".join(long_runs)
    for blob in _B64.findall(runs)[:8]:
        decoded = _b64(blob)
        if decoded and any(cue(decoded) for cue in _DECODED_CUES):
            return f"base64 that decodes to an injection: {decoded[:40]!r}"
    for blob in _HEX.findall(runs)[:8]:
        try:
            decoded = bytes.fromhex(blob).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            continue
        if any(cue(decoded) for cue in _DECODED_CUES):
            return f"hex that decodes to an injection: {decoded[:40]!r}"
    return None


def _b64(blob: str) -> str | None:
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        decoded = raw.decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    printable = sum(c.isprintable() or c in "\n\t" for c in decoded)
    return decoded if printable >= 0.95 * len(decoded) and " " in decoded else None


_LEAK: Final = re.compile(
    r"\b(print|reveal|show|repeat|output|display|tell me|give me|leak|dump|spell check|translate)\b"
    r"(\s+\w+){0,3}\s+(your|the|my|its)\s+(full\s+|entire\s+|original\s+|hidden\s+|secret\s+|initial\s+)?"
    r"(system\s+prompt|system\s+message|developer\s+message|initial\s+instructions|hidden\s+instructions|"
    r"previous\s+instructions|starting\s+instructions|instructions\s+(you were given|above)|"
    r"initial\s+prompt|prompt\s+above|configuration)",
    _I,
)


def prompt_leak(text: str) -> str | None:
    """A request to show the system prompt or hidden instructions."""
    m = _LEAK.search(text)
    return None if m is None else f"asks for the system prompt: {m.group(0)[:60]!r}"


_PERSONA: Final = re.compile(
    r"\b(do anything now|dan mode|developer mode (enabled|output)|jailbr(oken|eak(ed)? mode)|"
    r"(no|without( any)?) (restrictions|filters|rules|limitations|content polic(y|ies))\b.{0,80}"
    r"\b(answer|respond|reply|comply|stay in character|never refuse)"
    r"|(safety|content) (guidelines|polic(y|ies)|filters?) (were|are|have been) (removed|disabled|lifted))",
    _I | re.S,
)


def persona_jailbreak(text: str) -> str | None:
    """'You are DAN / in developer mode / without restrictions' persona jailbreaks."""
    m = _PERSONA.search(text)
    return None if m is None else f"a persona jailbreak: {m.group(0)[:60]!r}"


_TO_MODEL: Final = re.compile(
    r"(note|message|instruction|notice|request)s?\s+(to|for)\s+(all\s+)?(the\s+)?"
    r"(ai|llm|language model|assistant|agent|chatbot|model)s?\b"
)
_MODEL_READING: Final = re.compile(
    r"\b(ai|llm|language model|assistant|agent)s?\s+(reading|processing|summari[sz]ing)\s+this\b"
)
_BEFORE_TASK: Final = re.compile(
    r"before you (can )?(solve|do|complete|continue|answer|summari[sz]e)\b.{0,40}\b(task|question|request)\b",
    re.S,
)
_ATTENTION: Final = re.compile(r"attention,?\s+(ai|llm|language model|assistant|agent)\b")
# (cue, pattern, characters before the cue where a match may start)
_ADDRESSED: Final = (
    *((cue, _TO_MODEL, 0) for cue in ("note", "message", "instruction", "notice", "request")),
    *((cue, _MODEL_READING, 40) for cue in ("reading this", "processing this", "summari")),
    ("before you", _BEFORE_TASK, 0),
    ("attention", _ATTENTION, 0),
)


def addressed_to_model(text: str) -> str | None:
    """Text that speaks to the AI reading it ('Note to AI agents reading this', 'Before you
    solve the task...'): data has no business addressing the model."""
    low = text.lower()
    for cue, pattern, back in _ADDRESSED:
        at = low.find(cue)
        while at >= 0:  # each pattern only where its cue is: a cue is rare, a scan is not
            m = pattern.search(low, max(0, at - back), at + 300)
            if m is not None:
                return f"addresses the model directly: {m.group(0)[:60]!r}"
            at = low.find(cue, at + 1)
    return None


# Words one of which a text must hold (lower-cased) for a detector to run its patterns: a
# substring test costs ~1 us per 2 KB where a case-insensitive pattern costs ~100 us, and
# most texts hold none of them. None: the detector always runs.
CUES: Final[dict[str, tuple[str, ...] | None]] = {
    "ignore_instructions": ("ignor", "disregard", "forget", "override", "skip", "bypass",
                            "follow", "obey"),
    "role_impersonation": ("<|", "inst]", "<<sys", "system", "assistant", "developer", "admin"),
    "hidden_characters": None,
    "exfiltration_link": ("![", "<img", "image", "pixel"),
    "tool_call_forging": ("tool", "function", '"role"', "call"),
    "encoded_payload": None,
    "prompt_leak": ("prompt", "instruction", "message", "configuration"),
    "persona_jailbreak": ("anything now", "dan mode", "developer mode", "jailbr", "restriction",
                          "filter", "rules", "limitation", "polic", "guideline"),
    "addressed_to_model": ("note", "message", "instruction", "notice", "request", "reading this",
                           "processing this", "summarizing this", "summarising this",
                           "before you", "attention"),
}  # fmt: skip

DETECTORS: Final[dict[str, Detector]] = {
    "ignore_instructions": ignore_instructions,
    "role_impersonation": role_impersonation,
    "hidden_characters": hidden_characters,
    "exfiltration_link": exfiltration_link,
    "tool_call_forging": tool_call_forging,
    "encoded_payload": encoded_payload,
    "prompt_leak": prompt_leak,
    "persona_jailbreak": persona_jailbreak,
    "addressed_to_model": addressed_to_model,
}


def run(text: str, names: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(detector, what it found) for each detector of ``names`` (None: all) that fires."""
    low = text.lower()
    found = []
    for name in names if names is not None else DETECTORS:
        cues = CUES[name]
        if cues is not None and not any(c in low for c in cues):
            continue
        detail = DETECTORS[name](text)
        if detail is not None:
            found.append((name, detail))
    return found
