"""Governance at the effect gate: policy as code, screening of what enters a model's
context, a tamper-evident audit trail, secrets, and data protection.

Each part is a gate hook (``Runtime(gates=[...])``) or a reader of the journal; none of
them is reached around the gate. Submodules load on first use.
"""
