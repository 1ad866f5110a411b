"""A tamper-evident audit trail over the journals (see docs/audit.md).

Every store hash-chains each run's events as it writes them and keeps an anchor chain
over the runs' heads (``mainspring.store._chain``); this package reads them back:
:func:`verify` finds what was edited, deleted, inserted or reordered and where,
:func:`export_lines` writes them as JSON lines, :func:`purge` and :func:`erase_user`
delete whole runs after anchoring them, :func:`sign_anchors` signs anchors with a key the
database never sees.
"""

from __future__ import annotations

from .export import Redactor, export_lines, records
from .findings import KINDS, Finding, Report
from .retention import Deleted, Erased, erase_user, purge
from .signing import generate_keys, load_private_key, load_public_key, sign_anchors
from .verify import audited, verify

__all__ = [
    "KINDS",
    "Deleted",
    "Erased",
    "Finding",
    "Redactor",
    "Report",
    "audited",
    "erase_user",
    "export_lines",
    "generate_keys",
    "load_private_key",
    "load_public_key",
    "purge",
    "records",
    "sign_anchors",
    "verify",
]
