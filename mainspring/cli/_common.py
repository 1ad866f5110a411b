"""What every command shares: options, the store, JSON arguments, async, and errors.

Errors are caught in one place, :class:`CliGroup`: a Mainspring error, a bad
argument or a usage error click finds (unknown option, bad value, missing
argument) prints one red ``error: ...`` line on stderr and exits with the code
below. Anything unexpected prints one line too, unless ``--debug`` (or
``MAINSPRING_DEBUG=1``) asks for the traceback.

Exit codes:

* 0: done (a run finished or parked on an interrupt; a replay matched).
* 1: the run failed or was cancelled; a replay diverged.
* 2: usage error: bad option, bad JSON, a graph that cannot be loaded, input
  that does not fit the graph.
* 3: the store or the run refused: unknown run, foreign store file, run in the
  wrong state, another process driving the run.
* 4: internal error (a bug: rerun with ``--debug`` and report it).
* 130: interrupted with Ctrl-C (a run in progress stays resumable).
"""

from __future__ import annotations

import getpass
import importlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeVar

import anyio
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup

from ..engine import Runtime, load_graph
from ..engine.tenancy import TenantRuntime
from ..errors import GraphError, MainspringError, SerializationError, StateError
from ..events import RunStarted
from ..graph import CompiledGraph

if TYPE_CHECKING:
    from typer._click import Context as ClickContext  # the type TyperGroup.invoke declares

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_RUN_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3
EXIT_INTERNAL: Final = 4

DEFAULT_STORE: Final = "sqlite:///mainspring.db"
_DEBUG_KEY: Final = "mainspring.debug"
_DRIVING_KEY: Final = "mainspring.driving"
_USAGE_ERRORS: Final = (GraphError, StateError, SerializationError)


class CliError(Exception):
    """A problem with what the user asked for; the message says what to fix."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- consoles ----------------------------------------------------------------------


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped output: do not squeeze tables into 80 columns
    return console


def out() -> Console:
    """A console on the current stdout (looked up per call, so test runners can swap it)."""
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


def echo_json(value: Any, *, indent: bool = False) -> None:
    """Write ``value`` as JSON to stdout: one line, or indented for one document."""
    option = orjson.OPT_INDENT_2 if indent else 0
    typer.echo(orjson.dumps(value, option=option).decode())


# -- shared options ----------------------------------------------------------------


def _enable_debug(ctx: typer.Context, value: bool) -> bool:
    if value:
        ctx.meta[_DEBUG_KEY] = True
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("mainspring").setLevel(logging.DEBUG)
    return value


StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="MAINSPRING_STORE",
        metavar="URL",
        help="Store URL: sqlite:///path.db, a path ending in .db, or postgresql://user@host/db.",
    ),
]
TenantOption = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="MAINSPRING_TENANT",
        metavar="NAME",
        help="Act as this tenant: only its runs and threads are seen, and runs start as it "
        "(another tenant's run is not found). Default: every tenant's (the admin view).",
    ),
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        envvar="MAINSPRING_ACTOR",
        metavar="WHO",
        help="Who acts, recorded in the run's journal for the audit trail. Default: the "
        "operating-system user at this host (user@host).",
    ),
]


def actor_or_default(actor: str | None) -> str:
    """``--actor``, or who runs this command (``user@host``): an administrative action
    through the CLI always names someone in the journal."""
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = f"uid:{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        callback=_enable_debug,
        help="Show tracebacks of unexpected errors and debug logs (or set MAINSPRING_DEBUG=1).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables and text.")]
ModelsOption = Annotated[
    str | None,
    typer.Option(
        "--models",
        envvar="MAINSPRING_MODELS",
        metavar="MODULE:ATTR",
        help="The model gateway ctx.model calls: a mainspring.models.Gateway, or a function "
        "returning one (e.g. myapp.models:gateway).",
    ),
]
ToolsOption = Annotated[
    str | None,
    typer.Option(
        "--tools",
        envvar="MAINSPRING_TOOLS",
        metavar="MODULE:ATTR",
        help="The toolbox ctx.tool calls: a mainspring.tools.Toolbox, or a function "
        "returning one (e.g. myapp.tools:toolbox).",
    ),
]
EventsOption = Annotated[
    str,
    typer.Option(
        "--events",
        envvar="MAINSPRING_EVENTS",
        metavar="auto|pg|redis://...|off",
        help="How this process tells the others (API servers, workers) of its runs' events, "
        "live, and hears theirs: auto (PostgreSQL NOTIFY on a PostgreSQL store), pg, a Redis "
        "URL (the same on every server and worker) or off.",
    ),
]


def events_choice(value: str) -> str:
    """The ``fanout=`` of a Runtime for ``--events`` (``serve``, ``worker``); a bad one is
    a usage error that says what to give."""
    from ..fanout import FanoutError, check_choice

    try:
        return check_choice(value)
    except FanoutError as exc:
        raise CliError(f"--events: {exc}") from None


GraphOption = Annotated[
    str | None,
    typer.Option(
        "--graph",
        "-g",
        metavar="MODULE:GRAPH",
        help="The run's graph, if the one recorded at start (its ref) cannot be imported here.",
    ),
]


# -- store, graphs, JSON -----------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :].partition("?")[0])  # without ?create=true
    if "://" not in url and url.endswith((".db", ".sqlite", ".sqlite3")):
        return Path(url)
    return None


@asynccontextmanager
async def open_runtime(
    url: str, *, create: bool = False, models: str | None = None, tools: str | None = None
) -> AsyncIterator[Runtime]:
    """An open runtime on the store at ``url``.

    Crash recovery is off: merely running a command never adopts the runs of
    other processes (continue a crashed run with ``mainspring resume RUN``).
    Without ``create``, a missing SQLite file is an error instead of a new store.
    ``models`` (or ``MAINSPRING_MODELS``) names the model gateway its runs call, ``tools``
    (or ``MAINSPRING_TOOLS``) their toolbox, ``MAINSPRING_MEMORY`` their memory (a
    ``MODULE:ATTR`` naming a ``mainspring.Memory``, or a function returning one).
    """
    path = _sqlite_path(url)
    if not create and path is not None and not path.exists():
        raise CliError(
            f"no Mainspring store at {path}; pass --store URL or set MAINSPRING_STORE",
            EXIT_REFUSED,
        )
    gateway = import_capability(models or os.environ.get("MAINSPRING_MODELS"), "models")
    toolbox = import_capability(tools or os.environ.get("MAINSPRING_TOOLS"), "tools")
    memory = import_capability(os.environ.get("MAINSPRING_MEMORY"), "memory")
    async with Runtime.open(url, recover="off", models=gateway, tools=toolbox, memory=memory) as rt:
        yield rt


#: What a command reads and acts on runs through: the runtime (every tenant), or a view.
Api = Runtime | TenantRuntime


def scope(rt: Runtime, tenant: str | None) -> Api:
    """The runtime as ``--tenant`` sees it (all of it without)."""
    return rt if tenant is None else rt.tenant(tenant)


def importable_cwd() -> None:
    """Let graphs (given or recorded as ``module:attr``) be imported from the current directory."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_graph(ref: str) -> CompiledGraph:
    """Import ``MODULE:GRAPH`` with the current directory importable."""
    importable_cwd()
    return load_graph(ref)


_CAPABILITY = {"models": ("a mainspring.models.Gateway", "call_in_run"),
               "tools": ("a mainspring.tools.Toolbox", "call_in_run"),
               "memory": ("a mainspring.Memory", "in_run")}  # fmt: skip


def import_ref(ref: str, option: str, what: str, code: int = EXIT_USAGE) -> Any:
    """The object ``MODULE:ATTR`` (given as ``--option``) names, the current directory
    importable; a clear error saying what to give when it cannot be imported."""
    module, _, attr = ref.partition(":")
    importable_cwd()
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CliError(
            f"--{option} {ref}: cannot import it ({exc}); give MODULE:ATTR of {what}, "
            "importable from the current directory",
            code,
        ) from None


def import_capability(ref: str | None, option: str) -> Any:
    """The gateway, toolbox or memory ``MODULE:ATTR`` names (the object, or a function
    returning it)."""
    if not ref:
        return None
    what, marker = _CAPABILITY[option]
    found = import_ref(ref, option, what)
    made = found() if callable(found) and not hasattr(found, marker) else found
    if not hasattr(made, marker):
        raise CliError(f"--{option} {ref} is {made!r}, not {what}")
    return made


def maybe_graph(ref: str | None) -> CompiledGraph | None:
    """The graph ``--graph`` names, if given."""
    return None if ref is None else import_graph(ref)


async def graph_of_run(rt: Api, run_id: str, option: str | None) -> CompiledGraph:
    """The graph to continue or read ``run_id`` with: ``--graph``, else the ref its journal records.

    Resolved here rather than left to the runtime, so that a graph that cannot be found
    is explained in the terms of the command line: ``--graph`` and the current directory.
    The run is looked up (through ``rt``'s tenant scope) before anything of it is read.
    """
    await rt.get_run(run_id)
    if option is not None:
        return import_graph(option)
    first = await rt.events(run_id, until=1)
    started = first[0].data if first else None
    ref = started.ref if isinstance(started, RunStarted) else None
    if not ref:
        record = await rt.get_run(run_id)  # an unknown run id is reported as such
        raise CliError(
            f"run {run_id!r} belongs to graph {record.graph!r}, which was compiled without "
            "ref=, so its journal does not say where the graph lives; pass --graph MODULE:GRAPH "
            "(the module and variable that hold it, e.g. --graph myapp.agents:app)"
        )
    importable_cwd()
    module = ref.partition(":")[0]
    try:
        importlib.import_module(module)
        return load_graph(ref)
    except ImportError as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (module == missing or module.startswith(f"{missing}.")):
            fix = f"run the command from the project directory (the one holding {missing!r})"
        else:  # the module is there; something it imports is not
            fix = f"install what {module!r} needs"
        raise CliError(
            f"run {run_id!r} records its graph as {ref!r}, which cannot be imported from "
            f"{os.getcwd()} ({exc}); {fix}, or pass --graph MODULE:GRAPH"
        ) from None
    except GraphError as exc:
        raise CliError(
            f"run {run_id!r} records its graph as {ref!r}, which does not load: {exc}; "
            "pass --graph MODULE:GRAPH"
        ) from None


def parse_json(text: str, option: str) -> Any:
    """Parse a JSON option value; ``@file.json`` reads a file and ``@-`` stdin."""
    source = None
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {option} file {source!r}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if source is not None:
            where = "stdin" if source == "-" else f"file {source!r}"
            raise CliError(f"{option}: {where} is not valid JSON ({exc})") from None
        raise CliError(
            f"{option} is not valid JSON ({exc}); quote it for the shell, "
            f'e.g. {option} \'{{"text": "hi"}}\', or pass {option} @file.json'
        ) from None


def driving(ctx: typer.Context, run_id: str, resume: str) -> None:
    """Note the run this command drives and how to continue it, for the Ctrl-C message."""
    ctx.meta[_DRIVING_KEY] = (run_id, resume)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """The one bridge from a command to the async runtime."""
    return anyio.run(fn)


# -- errors ------------------------------------------------------------------------


def _single(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups, or the group itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` as one red line on stderr and exit with ``code``."""
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    err().print(f"[bold red]error:[/] [red]{escape(line)}[/]", soft_wrap=True)
    raise typer.Exit(code)


def _usage_line(exc: typer.TyperException) -> str:
    """Click's usage error (bad option, missing argument, unknown command) as one line."""
    # typer validates values with pydantic, whose messages start "Value error, ".
    message = exc.format_message().replace("Value error, ", "").strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    path = getattr(getattr(exc, "ctx", None), "command_path", None)
    return f"{message} (see '{path} --help')" if isinstance(path, str) else message


def _is_help(exc: BaseException) -> bool:
    # Raised for `mainspring` alone, once typer has printed the help: not an error to report.
    # Matched by name, as typer's own error printer does.
    return type(exc).__name__ == "NoArgsIsHelpError"


class CliGroup(TyperGroup):
    """The app's group: turns every error of every command into one line and an exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: ClickContext | None = None,
        **extra: Any,
    ) -> ClickContext:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as exc:  # the group's own options: `mainspring --bogus`
            if _is_help(exc):
                raise
            fail(_usage_line(exc), EXIT_USAGE)

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, BrokenPipeError):
            raise  # exits and closed pipes: typer handles them
        except KeyboardInterrupt:
            message = "interrupted"
            if _DRIVING_KEY in ctx.meta:  # shared by the command's context and this one
                run_id, resume = ctx.meta[_DRIVING_KEY]
                message += f"; run {run_id} stays resumable from its journal: {resume}"
            err().print(Text(message, "yellow"), soft_wrap=True)
            raise typer.Exit(130) from None
        except Exception as raised:
            exc = _single(raised)
            if isinstance(exc, typer.Exit | typer.Abort):
                raise exc from None
            if isinstance(exc, typer.TyperException):  # click's usage errors, all of them
                if _is_help(exc):
                    raise exc from None
                fail(_usage_line(exc), EXIT_USAGE)
            if isinstance(exc, CliError):
                fail(str(exc), exc.code)
            if isinstance(exc, MainspringError):
                fail(str(exc), EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_REFUSED)
            if ctx.meta.get(_DEBUG_KEY) or os.environ.get("MAINSPRING_DEBUG", "") not in ("", "0"):
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                EXIT_INTERNAL,
            )
