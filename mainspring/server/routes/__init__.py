"""The API's routes, one module per concept; ``ROUTERS`` is the one place a module is added."""

from __future__ import annotations

from fastapi import FastAPI

from . import agui, graphs, interrupts, openai, ops, runs, streams, threads

ROUTERS = (
    ops.router,
    graphs.router,
    runs.router,
    threads.router,
    interrupts.router,
    streams.router,
    agui.router,
    openai.router,
)


def mount_console(app: FastAPI) -> None:
    """Serve the web console at ``/`` (its static files ship in the package)."""
    from ..console import mount

    mount(app)
