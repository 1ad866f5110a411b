"""``mainspring serve``: the HTTP API and web console over one runtime (docs/server.md).

Embedded by default (the SQLite file of ``--store``, created if missing; nothing else to
start), on PostgreSQL with ``--store postgresql://...``: the same command. The runtime
is opened with crash recovery on, so runs a previous server left unfinished are taken
over. SIGINT or SIGTERM stops the server cleanly: no new requests, live runs get
``--drain`` seconds to finish or park, the rest stay resumable in their journals.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import (
    DEFAULT_STORE,
    EXIT_REFUSED,
    CliError,
    DebugOption,
    ModelsOption,
    StoreOption,
    ToolsOption,
    import_capability,
    importable_cwd,
    run_async,
)

if TYPE_CHECKING:
    from ..server.keys import KeyStore


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_GraphOption = Annotated[
    list[str] | None,
    typer.Option(
        "--graph",
        "-g",
        metavar="MODULE:ATTR",
        help="A graph or agent to serve (repeatable), e.g. myapp.agents:support; importable "
        "from the current directory.",
    ),
]

_NoAuthOption = Annotated[
    bool,
    typer.Option(
        "--no-auth",
        help="No API keys: every request acts as an admin of every tenant. Refused unless "
        "--host is a loopback address.",
    ),
]

_CorsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cors",
        metavar="ORIGIN",
        help="Let browser pages from this origin call the API (repeatable), e.g. "
        "https://app.example.com.",
    ),
]

_DrainOption = Annotated[
    float,
    typer.Option(
        "--drain",
        metavar="SECONDS",
        min=0,
        help="On shutdown, how long live runs and open requests get to finish or park; "
        "the rest stay resumable.",
    ),
]

_RateOption = Annotated[
    float,
    typer.Option("--rate", metavar="PER_SECOND", min=0.01, help="Requests per second per API key."),
]

_BurstOption = Annotated[
    int, typer.Option("--burst", min=1, help="Requests a key may make at once past --rate.")
]

_MaxBodyOption = Annotated[
    int,
    typer.Option(
        "--max-body",
        metavar="BYTES",
        min=1024,
        help="Largest request body accepted (413 past it).",
    ),
]


_QueueOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        metavar="NAME",
        help="Queue mode: runs started through the API wait in this run queue of the "
        "PostgreSQL store for workers (mainspring worker --queue NAME) instead of running "
        "in this process.",
    ),
]

_RateStoreOption = Annotated[
    str | None,
    typer.Option(
        "--rate-limit-store",
        metavar="URL",
        help="Keep the per-key rate limit in Redis (redis://host:6379/0), shared by every "
        "server using it (while Redis cannot be reached, each server limits on its own, "
        "and logs it); default: each server process limits on its own.",
    ),
]


def serve(
    store: StoreOption = DEFAULT_STORE,
    graph: _GraphOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free port).")
    ] = 8000,
    no_auth: _NoAuthOption = False,
    cors: _CorsOption = None,
    drain: _DrainOption = 10.0,
    rate: _RateOption = 50.0,  # ServerConfig's defaults (the server package loads only when serving)
    burst: _BurstOption = 100,
    max_body: _MaxBodyOption = 1 << 20,
    queue: _QueueOption = None,
    rate_limit_store: _RateStoreOption = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="uvicorn's log level.")
    ] = LogLevel.info,
    models: ModelsOption = None,
    tools: ToolsOption = None,
    debug: DebugOption = False,
) -> None:
    """Serve the HTTP API and the web console over the runtime on --store.

    Prints the URL once it listens. Requests need an API key (`mainspring keys create
    --tenant T --scopes read,run`), unless --no-auth on a loopback address. Stop it with
    Ctrl-C (or SIGTERM): runs still going stay resumable and are taken over by the next
    server on the same store.
    """
    if no_auth and not is_loopback(host):
        raise CliError(
            f"--no-auth on --host {host} would let anyone who can reach it act on every "
            "tenant's runs; serve on a loopback address (--host 127.0.0.1) or drop --no-auth "
            "and give clients API keys (mainspring keys create --tenant T --scopes read,run)"
        )
    app = _make_app(
        store, graph or [], no_auth=no_auth, cors=cors or [], rate=rate, burst=burst,
        max_body=max_body, drain=drain, models=models, tools=tools, queue=queue,
        rate_limit_url=rate_limit_store,
    )  # fmt: skip
    _run(app, store, graph or [], host=host, port=port, log_level=log_level, drain=drain,
         auth=not no_auth)  # fmt: skip


def _make_app(
    store: str,
    graphs: list[str],
    *,
    no_auth: bool,
    cors: list[str],
    rate: float,
    burst: int,
    max_body: int,
    drain: float,
    models: str | None,
    tools: str | None,
    queue: str | None = None,
    rate_limit_url: str | None = None,
) -> Any:
    """The ASGI app ``serve`` runs (a clear error for a missing extra, a bad option)."""
    try:
        from ..server import ServerConfig, UnknownGraphError, create_app
        from ..server.security import check_origins
    except ImportError as exc:
        raise CliError(
            f"mainspring serve needs the server extra ({exc.name} is missing): "
            "pip install 'mainspring[server]'"
        ) from None

    importable_cwd()
    options: dict[str, Any] = {
        "models": import_capability(models or os.environ.get("MAINSPRING_MODELS"), "models"),
        "tools": import_capability(tools or os.environ.get("MAINSPRING_TOOLS"), "tools"),
        "memory": import_capability(os.environ.get("MAINSPRING_MEMORY"), "memory"),
        "drain_timeout": drain,
    }
    config = ServerConfig(
        auth=not no_auth, cors_origins=tuple(cors), rate=rate, burst=burst,
        max_body_bytes=max_body, queue=queue, rate_limit_url=rate_limit_url,
    )  # fmt: skip
    try:
        check_origins(tuple(o for o in config.cors_origins if o != "*"))  # '*': app warns
    except ValueError as exc:
        raise CliError(f"--cors: {exc}") from None
    try:
        return create_app(
            store, graphs=graphs, keys=None if no_auth else _keys(store), config=config,
            **options,
        )  # fmt: skip
    except UnknownGraphError as exc:
        raise CliError(f"--graph: {exc}") from None
    except ValueError as exc:  # e.g. --queue on a store without run queues
        raise CliError(str(exc)) from None


def _run(
    app: Any,
    store: str,
    graphs: list[str],
    *,
    host: str,
    port: int,
    log_level: LogLevel,
    drain: float,
    auth: bool,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; say how it ended."""
    import uvicorn

    from ..server.routes.streams import close_streams
    from ._serving import QuietStartup, Server, log_config, startup_error

    server = Server(
        uvicorn.Config(
            QuietStartup(app),
            host=host,
            port=port,
            log_level=log_level.value,
            log_config=log_config(),  # all of it on stderr: stdout has the command's lines
            lifespan="on",
            timeout_graceful_shutdown=max(1, round(drain)),
        ),
        store=store,
        graphs=graphs,
        auth=auth,
        stopping=lambda: close_streams(app),
        hurry=app.state.mainspring.runtime.stop_draining,
    )
    run_async(server.serve)
    failed = startup_error(app)
    if failed is not None:
        raise CliError(f"cannot open the store {store}: {failed}", EXIT_REFUSED)
    if not server.started:
        raise CliError(
            f"the server did not start on {host}:{port} (see its log above: a port in use, a "
            "store that cannot be opened?)",
            EXIT_REFUSED,
        )
    typer.echo(
        "mainspring serve: stopped"
        + (" at once (a second signal: no drain)" if server.hurried else "")
        + "; runs still going stay resumable in the store (the next server on it takes "
        "them over)"
    )


def _keys(store: str) -> KeyStore:
    """The API key store beside the runs (same URL: one place to back up)."""
    from ..server.keys import key_store_from_url

    return key_store_from_url(store)
