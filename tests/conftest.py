"""Shared fixtures: the anyio backend, one fresh store per test on every backend, service checks.

``store`` is parametrised over ``memory``, ``sqlite`` and ``postgres``. A backend
whose service is unreachable (or whose module is not there yet) is skipped with
the reason, unless ``MAINSPRING_REQUIRE_SERVICES=1``, which turns the skip into
a failure (CI sets it so that a broken service cannot pass as green).

A store test says what it needs with :func:`needs`: the store protocols it uses
(every store must implement the required ones: one that does not fails) and the
capabilities it depends on (a backend that does not declare them skips the test,
with the reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from mainspring.store import (
    Cursors,
    Journal,
    Leases,
    RunIndex,
    Store,
    StoreCapabilities,
    store_from_url,
)

PG_URL = os.environ.get("MAINSPRING_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

STORE_BACKENDS = ["memory", "sqlite", "postgres"]

#: The protocols every store implements; the others (AppendsNow, ObservesCommits) are optional.
REQUIRED_PROTOCOLS: tuple[type, ...] = (Journal, RunIndex, Leases, Cursors)
_CAPABILITIES = frozenset(StoreCapabilities.__struct_fields__)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store_needs(*protocols, **capabilities): what a store test needs (see conftest.needs)",
    )


def needs(*protocols: type, **capabilities: bool) -> pytest.MarkDecorator:
    """Mark a test of ``store`` with the protocols it uses and the capabilities it needs.

    ``needs(Journal, Leases, durable=True)``: runs on every backend that implements
    Journal and Leases (a required protocol missing is a failure, an optional one a
    skip) and declares ``durable=True`` in its capabilities (skipped elsewhere).
    """
    unknown = set(capabilities) - _CAPABILITIES
    if unknown:
        raise TypeError(f"no such store capabilities: {sorted(unknown)}")
    # with_args: a lone class argument would be taken for the thing to decorate.
    return pytest.mark.store_needs.with_args(*protocols, **capabilities)


def _check_needs(request: pytest.FixtureRequest, backend: str, store: Store) -> None:
    """Fail or skip the test before it runs if ``store`` lacks what its marks need."""
    for mark in request.node.iter_markers("store_needs"):
        for protocol in mark.args:
            if isinstance(store, protocol):
                continue
            if protocol in REQUIRED_PROTOCOLS:
                pytest.fail(f"the {backend} store does not implement {protocol.__name__}")
            pytest.skip(f"the {backend} store does not implement {protocol.__name__}")
        for name, wanted in mark.kwargs.items():
            declared = getattr(store.capabilities, name)
            if declared != wanted:
                pytest.skip(
                    f"needs {name}={wanted}; the {backend} store declares {name}={declared}"
                )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the runtime runs on anyio's asyncio backend; asyncpg needs asyncio


def service_missing(reason: str) -> NoReturn:
    """Skip the current test because a service is missing, or fail if services are required."""
    if os.environ.get("MAINSPRING_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (MAINSPRING_REQUIRE_SERVICES=1 requires it)", pytrace=False)
    pytest.skip(reason)


@functools.cache
def postgres_unavailable(url: str = PG_URL) -> str | None:
    """Why PostgreSQL at ``url`` cannot be used for tests, or None if it can (probed once)."""
    where = urlsplit(url).netloc.rpartition("@")[2] or url
    try:
        import asyncpg
    except ImportError as exc:
        return f"PostgreSQL not reachable at {where}: asyncpg is not installed ({exc})"

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        # In a thread of its own: callers may be inside a running event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        return f"PostgreSQL not reachable at {where}: {type(exc).__name__}: {exc}"
    return None


def require_postgres(url: str = PG_URL) -> str:
    """Return ``url`` if PostgreSQL answers there; otherwise skip (or fail, see module doc)."""
    reason = postgres_unavailable(url)
    if reason is not None:
        service_missing(reason)
    return url


async def drop_postgres_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _postgres_store_missing() -> str | None:
    try:
        importlib.import_module("mainspring.store.postgres")
    except ImportError as exc:
        return f"the PostgreSQL store is not available: {exc}"
    return None


@contextlib.asynccontextmanager
async def postgres_schema_url() -> AsyncIterator[str]:
    """A store URL on a schema of its own (skips if PostgreSQL or its store is missing)."""
    base = require_postgres()
    missing = _postgres_store_missing()
    if missing is not None:
        service_missing(missing)
    schema = f"ms_t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        await drop_postgres_schema(base, schema)


@pytest.fixture
async def postgres_url(anyio_backend: str) -> AsyncIterator[str]:
    """A PostgreSQL store URL on a fresh schema, dropped after the test."""
    async with postgres_schema_url() as url:
        yield url


@pytest.fixture
def postgres_url_sync() -> Iterator[str]:
    """``postgres_url`` for synchronous tests (a CLI's own event loop must be the only one
    in the thread: an async fixture would keep the test runner's loop there)."""
    base = require_postgres()
    missing = _postgres_store_missing()
    if missing is not None:
        service_missing(missing)
    schema = f"ms_t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, drop_postgres_schema(base, schema)).result()


@pytest.fixture(params=STORE_BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Store]:
    """A fresh, open store of each backend; closed (and its schema dropped) afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        backend: str = request.param
        if backend == "memory":
            url = "memory://"
        elif backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'store.db'}"
        else:
            url = await stack.enter_async_context(postgres_schema_url())
        opened = store_from_url(url)
        _check_needs(request, backend, opened)
        await opened.open()
        stack.push_async_callback(opened.aclose)
        yield opened
