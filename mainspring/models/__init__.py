"""The model gateway: messages, providers, routing, caching, accounting and budgets.

Reached from a node as ``await ctx.model(...)``, a journaled effect through the
engine's gate; usable on its own as ``Gateway.complete``.
"""
