"""Reconnect and backoff for the PostgreSQL store: which driver errors pass, and what to say.

A server restart, a failover or a dropped connection shows up as one of a few
driver errors. Those are *transient*: the operation waits with exponential
backoff and full jitter and tries again, for up to ``retry_for`` seconds, then
raises :class:`StoreUnavailableError`. Everything else is translated once, here,
into a one-line :class:`StoreError` that says what to fix.

Retries are for a server that worked before. While the store opens, nothing has
answered yet: a refused, unreachable or silent address is a wrong URL or a server
that is not running, and fails at once. Only a server that answers that it is
starting up or has no connection to spare is waited for, as after open.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import asyncpg

from ..errors import MainspringError, StoreError, StoreUnavailableError
from ._pg_url import Target

log = logging.getLogger("mainspring.store.postgres")

T = TypeVar("T")

_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0

# Server-side conditions that pass on their own: shutdown or startup in progress,
# too many clients, and transaction rollbacks (nothing was committed).
_TRANSIENT_SERVER_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InternalClientError,  # protocol state of a connection that just broke
)


# The server is there but cannot take a connection yet: waited for even while opening.
_SERVER_NOT_READY: tuple[type[Exception], ...] = (
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.exceptions.TooManyConnectionsError,
)
# Transient, but the connection is fine: nothing was committed and it can be used again.
_ROLLED_BACK: tuple[type[Exception], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later attempt on a fresh connection may not meet."""
    if isinstance(exc, socket.gaierror):
        return False  # a host name that does not resolve is a typo, not an outage
    if isinstance(exc, (OSError, *_TRANSIENT_SERVER_ERRORS)):  # refused, reset, timed out
        return True
    # The pool handed out a connection the server had already closed.
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def is_connection_lost(exc: BaseException) -> bool:
    """True if ``exc`` says that a connection, or the path to the server, is gone."""
    return is_transient(exc) and not isinstance(exc, _ROLLED_BACK)


def permanent_error(exc: BaseException, target: Target, what: str) -> StoreError:
    """Translate a non-transient driver error into a one-line StoreError that says what to fix."""
    t = target
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return StoreError(
            f"PostgreSQL database {t.database!r} does not exist on {t.host}:{t.port}; "
            f"create it (createdb {t.database}) or fix the database name in the store URL"
        )
    if isinstance(exc, asyncpg.exceptions.InvalidPasswordError):
        return StoreError(
            f"PostgreSQL at {t.host}:{t.port} rejected the password of role {t.user!r}; "
            "fix the password in the store URL (or PGPASSWORD / ~/.pgpass)"
        )
    if isinstance(exc, asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        return StoreError(
            f"PostgreSQL at {t.host}:{t.port} refused role {t.user!r} ({_one_line(exc)}); "
            "fix the user in the store URL or create the role"
        )
    if isinstance(exc, socket.gaierror):
        return StoreError(
            f"cannot resolve the PostgreSQL host {t.host!r} ({exc.strerror}); fix the host in the store URL"
        )
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return StoreError(
            f"role {t.user!r} lacks a privilege on {t} while {what} ({_one_line(exc)}); grant it, "
            f"or have an administrator create schema {t.schema!r} for this role"
        )
    return StoreError(
        f"PostgreSQL at {t} failed while {what}: {type(exc).__name__}: {_one_line(exc)}"
    )


def unavailable_error(
    exc: BaseException, target: Target, what: str, waited: float
) -> StoreUnavailableError:
    reason = _one_line(exc) or type(exc).__name__
    return StoreUnavailableError(
        f"PostgreSQL at {target} was unreachable for {waited:.1f} s while {what} ({reason}); "
        "check that the server is up and that host and port in the store URL are right, "
        "or wait longer with ?retry_for=seconds"
    )


def unreachable_error(exc: BaseException, target: Target) -> StoreUnavailableError:
    reason = _one_line(exc) or type(exc).__name__
    return StoreUnavailableError(
        f"cannot connect to PostgreSQL at {target} ({reason}); start the server, "
        "or fix host and port in the store URL"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Retrier:
    """Runs one store operation, retrying it through transient failures."""

    def __init__(self, target: Target, retry_for: float) -> None:
        self.target = target
        self.retry_for = retry_for
        self._down_since: float | None = None  # shared by all operations: log once per outage

    async def run(
        self, what: str, attempt: Callable[[bool], Awaitable[T]], *, opening: bool = False
    ) -> T:
        """Call ``attempt(retried)`` until it succeeds; ``retried`` is True after a failure.

        A retried write must allow for its earlier attempt having committed before
        the connection dropped (the reply was lost, not the write). ``opening``: no
        server has answered yet, so only one that is not ready is waited for.
        """
        start = time.monotonic()
        delay = _FIRST_DELAY
        retried = False
        while True:
            try:
                result = await attempt(retried)
            except MainspringError:
                raise  # already ours: a conflict, a missing run, a refusal
            except Exception as exc:
                if not is_transient(exc):
                    raise permanent_error(exc, self.target, what) from exc
                if opening and not isinstance(exc, _SERVER_NOT_READY):
                    raise unreachable_error(exc, self.target) from exc
                waited = time.monotonic() - start
                remaining = self.retry_for - waited
                if remaining <= 0:
                    raise unavailable_error(exc, self.target, what, waited) from exc
                self._note_down(exc)
                await anyio.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, _MAX_DELAY)
                retried = True
            else:
                self._note_up()
                return result

    def _note_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "PostgreSQL at %s is unavailable (%s); retrying for up to %.0f s",
                self.target,
                _one_line(exc) or type(exc).__name__,
                self.retry_for,
            )

    def _note_up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "PostgreSQL at %s is available again after %.1f s",
                self.target,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
