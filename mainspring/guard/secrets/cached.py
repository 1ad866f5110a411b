"""The shape a remote secret manager fits: a fetch function, kept for a short time.

``CachedSecrets(fetch, ttl=60)`` answers from what ``fetch(name)`` returned less than
``ttl`` seconds ago and calls it again after that, so a secret rotated in the manager
is seen within ``ttl`` without a restart. ``fetch`` is the adapter's only code: a
Vault KV read through ``hvac``, a cloud manager's ``get_secret_value``... (see
docs/secrets.md for a Vault sketch). A failing manager is not an outage while a value
fetched in the last ``stale_for`` seconds remains: that value is used, and the failure
is logged (by type, never with a value). ``await provider.prefetch(names)`` fetches in
a worker thread, so that a tool call need not wait for the network on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from .protocol import SecretsError, check_name

log = logging.getLogger("mainspring.secrets")


class CachedSecrets:
    """A provider over ``fetch(name) -> value or None``, each answer kept ``ttl`` seconds."""

    def __init__(self, fetch: Callable[[str], str | None], *, ttl: float = 60.0,
                 stale_for: float = 300.0, name: str | None = None) -> None:  # fmt: skip
        if ttl < 0 or stale_for < 0:
            raise ValueError(f"CachedSecrets: ttl={ttl} and stale_for={stale_for} must be >= 0")
        self.fetch = fetch
        self.ttl = ttl
        self.stale_for = stale_for
        self.name = name or getattr(fetch, "__qualname__", type(fetch).__name__)
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[str | None, float]] = {}  # name -> (value, fetched at)

    def __repr__(self) -> str:
        return f"CachedSecrets({self.name}, ttl={self.ttl:g})"

    def get(self, name: str) -> str | None:
        check_name(name)
        kept = self._kept.get(name)
        now = time.monotonic()
        if kept is not None and now - kept[1] < self.ttl:
            return kept[0]
        with self._lock:  # one fetch per name at a time; the others use what it got
            kept = self._kept.get(name)
            if kept is not None and time.monotonic() - kept[1] < self.ttl:
                return kept[0]
            return self._fetch(name, kept)

    __call__ = get

    def invalidate(self, name: str | None = None) -> None:
        """Forget ``name`` (or everything): the next lookup fetches (a rotation hook)."""
        with self._lock:
            if name is None:
                self._kept.clear()
            else:
                self._kept.pop(name, None)

    async def prefetch(self, names: Iterable[str]) -> None:
        """Fetch ``names`` now, in a worker thread (e.g. at start-up, or from a timer)."""
        import anyio.to_thread

        chosen = [check_name(n) for n in names]

        def fetch_all() -> None:
            for n in chosen:
                with self._lock:
                    self._fetch(n, self._kept.get(n))

        await anyio.to_thread.run_sync(fetch_all)

    def _fetch(self, name: str, kept: tuple[str | None, float] | None) -> str | None:
        try:
            value = self.fetch(name)
        except Exception as exc:
            if kept is not None and time.monotonic() - kept[1] < self.ttl + self.stale_for:
                log.warning("secret %r: %s failed (%s); using the value fetched before",
                            name, self.name, type(exc).__name__)  # fmt: skip
                return kept[0]
            raise SecretsError(
                f"secret {name!r}: {self.name} failed ({type(exc).__name__}) and nothing "
                "fetched before is recent enough to use"
            ) from None
        if value is not None and not isinstance(value, str):
            raise SecretsError(
                f"secret {name!r}: {self.name} returned a {type(value).__name__}, not a string"
            )
        self._kept[name] = (value or None, time.monotonic())
        return value or None
