"""``create_app``: the HTTP API and the console over one runtime, as an ASGI application.

The app reads and steers runs only through the runtime (the journal is the one source
of truth); it owns the runtime when given a store URL (opened in the app's lifespan,
closed when the server stops: live runs are left resumable), or uses one the caller
opened. Routes live in ``routes/`` by concept; each module has one ``router``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

import mainspring.server.errors as errors
import mainspring.server.security as security

from .._version import __version__
from ..engine.runtime import Runtime
from ..errors import MainspringError
from .catalog import GraphCatalog
from .config import ServerConfig
from .context import ServerState
from .detach import MainspringApp
from .keys.protocol import KeyStore
from .queued import check_server_queue
from .ratelimit import RateLimiter
from .routes import ROUTERS, mount_console
from .storewait import StoreWait


def create_app(
    runtime: Runtime | str = "sqlite:///mainspring.db",
    *,
    graphs: Iterable[object] = (),
    keys: KeyStore | None = None,
    config: ServerConfig | None = None,
    **runtime_options: Any,
) -> FastAPI:
    """The ASGI app (run it with uvicorn, or ``mainspring serve``).

    ``runtime``: a store URL (the app opens a Runtime on it for its lifetime, with
    ``runtime_options``, crash recovery on) or a Runtime the caller keeps open.
    ``graphs``: the graphs and agents served (objects or ``module:attr``). ``keys``: the
    API key store (required unless ``config.auth`` is False).
    """
    config = config or ServerConfig()
    catalog = GraphCatalog(graphs)
    owned = isinstance(runtime, str)
    rt = (
        Runtime.open(runtime, graphs=catalog.graphs(), **runtime_options)
        if isinstance(runtime, str)
        else runtime
    )
    if not owned:
        for graph in catalog.graphs():
            rt.register(graph)
    if config.auth and keys is None:
        raise ValueError(
            "create_app: auth is on but no key store was given; pass keys= (see "
            "mainspring.server.keys) or ServerConfig(auth=False) for a loopback-only server"
        )
    check_server_queue(rt.store, config.queue)
    state = ServerState(runtime=rt, catalog=catalog, config=config, keys=keys)
    limiter = _limiter(config.rate, config.burst, config.rate_limit_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            try:
                await limiter.open()  # Redis's shared limits: said at once if unreachable
                stack.push_async_callback(limiter.aclose)
                if keys is not None:
                    await keys.open()
                    stack.push_async_callback(keys.aclose)
                if owned:
                    await stack.enter_async_context(rt)
            except MainspringError as exc:  # a store that cannot be opened: said in one line
                state.extras["startup_error"] = exc  # by `mainspring serve` (quiet_startup)
                raise
            for start in state.extras.get("on_start", ()):
                await start(state)
            state.started_at = time.time()
            state.ready = True
            try:
                yield
            finally:
                state.ready = False
                for stop in reversed(state.extras.get("on_stop", ())):
                    await stop(state)

    app = MainspringApp(
        title="Mainspring",
        version=__version__,
        summary="Durable AI agent runs: start, watch, approve and debug them over HTTP.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.mainspring = state
    errors.install(app)
    app.add_middleware(StoreWait, timeout=config.request_store_timeout)  # inside security's
    security.install(app, config, limiter)
    for router in ROUTERS:
        app.include_router(router)
    if config.console:
        mount_console(app)
    return app


def _limiter(rate: float, burst: int, url: str | None) -> RateLimiter:
    """The server's limiter: local buckets, or Redis's at ``url``."""
    if url is None or rate <= 0:
        return RateLimiter(rate, burst)
    try:
        from .ratelimit_redis import RedisRateLimiter  # redis only when asked for
    except ImportError:
        raise ValueError(
            "rate_limit_url (--rate-limit-store) needs the redis client: "
            "pip install 'mainspring[redis]'"
        ) from None

    return RedisRateLimiter(url, rate, burst)
