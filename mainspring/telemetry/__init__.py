"""Observability read from the journal: spans, metrics and logs."""
