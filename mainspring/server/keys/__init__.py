"""API keys: per tenant, with scopes, stored hashed (``protocol.py``; backends beside it)."""
