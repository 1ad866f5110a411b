"""The web console: static files served by the API's own process (no Node.js needed)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Serve the console's pages and assets (filled in by the console module)."""
