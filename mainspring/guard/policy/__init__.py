"""Policy as code on every effect: rules in Python and Cedar, loaded from files,
versioned, hot-reloaded, per tenant, failing closed (see docs/policy.md).

    from mainspring.guard.policy import Policy, Rules, allow, deny, approve, rewrite
"""

from __future__ import annotations

from .hook import Policy
from .request import Request
from .rules import Rules
from .verdict import PolicyError, Verdict, allow, approve, deny, rewrite

__all__ = [
    "Policy",
    "PolicyError",
    "Request",
    "Rules",
    "Verdict",
    "allow",
    "approve",
    "deny",
    "rewrite",
]
