"""An exception rebuilt with a cleaned message: what the secrets scrubber and the PII
redactor raise instead of an error whose text (or chain) shows what must not be seen."""

from __future__ import annotations

from collections.abc import Callable


def rebuilt(
    exc: Exception, message: str, fallback: Callable[[str], Exception] | None = None
) -> Exception:
    """An exception of ``exc``'s type with ``message`` (or ``fallback(message)`` when the
    type cannot be built from one message: every Mainspring error can), without the chain
    that may quote the original, with ``exc``'s traceback (frames and source lines only)."""
    try:
        made: Exception | None = type(exc)(message)
        if str(made) != message:
            made = None
    except Exception:  # a type that wants other arguments
        made = None
    if made is None:
        made = fallback(message) if fallback is not None else RuntimeError(message)
    made.__cause__ = None
    made.__suppress_context__ = True
    return made.with_traceback(exc.__traceback__)


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, once each."""
    found: list[BaseException] = []
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        found.append(link)
        link = link.__cause__ or link.__context__
    return found
