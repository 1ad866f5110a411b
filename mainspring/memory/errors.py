"""Errors of the memory tiers, in Mainspring's one hierarchy (:mod:`mainspring.errors`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MainspringError

if TYPE_CHECKING:
    from .session.versioned import Versioned


class VersionConflict(MainspringError):
    """A compare-and-set found another version than the one it expected: another writer
    changed the shared value since it was read, and nothing was written.

    ``current`` is what is stored now (None: the value is absent, e.g. it expired), so a
    caller can retry with it without reading again.
    """

    def __init__(
        self, thread: str, key: str, expected: int, current: Versioned | None, *, tenant: str = ""
    ) -> None:
        found = "absent" if current is None else f"at version {current.version}"
        where = f" (tenant {tenant!r})" if tenant else ""
        super().__init__(
            f"shared value {key!r} of thread {thread!r}{where} is {found}, not at version "
            f"{expected}: another writer changed it since it was read; re-read it "
            f"(read_shared) and retry, or use update() which does"
        )
        self.thread = thread
        self.key = key
        self.expected = expected
        self.current = current
        self.tenant = tenant
