"""The server's settings: limits, CORS, streams. One frozen object, passed to ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How ``mainspring serve`` (``create_app``) behaves towards its clients.

    ``auth``: every request needs an API key (``Authorization: Bearer ms_...``); with
    ``auth=False`` every request acts as an admin of every tenant (``mainspring serve
    --no-auth``, allowed on a loopback address only). ``cors_origins``: none by default
    (CORS off). ``max_body_bytes``: larger request bodies get 413. ``rate``/``burst``:
    requests per second per API key (a token bucket), 429 past them.
    Streams: ``stream_buffer`` recent events kept per live run for its subscribers (a
    subscriber further behind reads the journal); ``stall_timeout`` seconds a client may
    leave its socket undrained before it is dropped; ``heartbeat`` seconds between
    keep-alive comments on an idle stream.
    Store down: ``ready_timeout`` seconds ``/readyz`` waits for the store before it answers
    503; ``request_store_timeout`` seconds a read (GET) waits for its answer to begin
    before it is answered 503 ``store_unavailable`` (None: as long as the runtime's
    ``retry_for``); writes always wait for the runtime's ``retry_for``.
    Scale-out: ``queue`` sends the runs the API starts to that run queue of the PostgreSQL
    store, where workers (``mainspring worker``) drive them (None: this process drives
    them); ``rate_limit_url`` (``redis://...``) keeps the rate limit's buckets in Redis,
    shared by every server using it (None: each process has its own).
    """

    auth: bool = True
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    rate: float = 50.0
    burst: int = 100
    stream_buffer: int = 512
    stall_timeout: float = 30.0
    heartbeat: float = 15.0
    console: bool = True
    ready_timeout: float = 2.0
    request_store_timeout: float | None = 10.0
    queue: str | None = None
    rate_limit_url: str | None = None
