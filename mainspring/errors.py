"""The one documented error hierarchy of Mainspring.

Every error a user can meet derives from :class:`MainspringError` and says what
to fix. Backend and driver errors are translated at the store boundary.
"""

from __future__ import annotations


class MainspringError(Exception):
    """Base class of every error Mainspring raises on purpose."""


class GraphError(MainspringError):
    """A graph that cannot be compiled; the message names the node and the fix."""


class StateError(MainspringError):
    """A state type or a state update that does not fit the graph's schema."""


class SerializationError(MainspringError):
    """A value that cannot be stored as JSON-compatible data."""


class StoreError(MainspringError):
    """A store that cannot be opened, read or written."""


class NotAStoreError(StoreError):
    """The file or database exists but is not a Mainspring store; it was left untouched."""


class SchemaVersionError(StoreError):
    """The store was written by a newer Mainspring; it was left untouched."""


class StoreUnavailableError(StoreError):
    """The store's server could not be reached within the configured retry time."""


class ConflictError(StoreError):
    """Another writer appended to the run first: this writer's view is stale.

    Raised instead of silently forking a run's history.
    """

    def __init__(self, run_id: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(
            f"run {run_id!r} was appended to by another writer: expected it at sequence "
            f"{expected_seq}, found {actual_seq}; only one process may drive a run at a time"
        )
        self.run_id = run_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class LeaseLostError(StoreError):
    """Another process took the run's lease over: this process may no longer write to it.

    Every append carries the writer's fencing token; the store refuses a holder whose
    token is no longer the run's. Raised instead of letting a stale process (one frozen
    past its lease, say) write after the process that took over.
    """

    def __init__(self, run_id: str, fence: int, current: int | None, owner: str | None) -> None:
        holder = f" by {owner}" if owner else ""
        super().__init__(
            f"run {run_id!r} was taken over{holder} (lease token {current}; this process held "
            f"{fence}): this process stopped driving it and wrote nothing more"
        )
        self.run_id = run_id
        self.fence = fence
        self.current = current
        self.owner = owner


class TransientStoreError(StoreError):
    """A write the store could not make now but may make soon: a full disk, an I/O error,
    a file locked by another process. The runtime retries it, and past its ``retry_for``
    leaves the run resumable; a storage error never fails a run."""


class RunNotFoundError(MainspringError):
    """No run with this id exists in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} in this store")
        self.run_id = run_id


class TenantError(MainspringError):
    """A request that would cross tenants: a tenant-scoped view asked to start a run as
    another tenant, or a tenant named by something other than a string."""


class RunStateError(MainspringError):
    """The run is not in a state that allows the requested operation."""


class RunExistsError(RunStateError):
    """``start`` with the id of an existing run that was started differently (another
    graph, input or thread): an idempotent start must repeat the same request."""


class RunFailedError(MainspringError):
    """The run ended in failure; ``error`` holds the recorded error."""

    def __init__(self, run_id: str, error: dict[str, object]) -> None:
        node = error.get("node")
        where = f" in node {node!r}" if node else ""
        super().__init__(
            f"run {run_id!r} failed{where}: {error.get('type')}: {error.get('message')}"
        )
        self.run_id = run_id
        self.error = error


class RunCancelledError(MainspringError):
    """The run was cancelled before it finished."""


class NodeTimeoutError(MainspringError, TimeoutError):
    """A node attempt ran longer than its timeout."""


class NondeterminismError(MainspringError):
    """Replay or resume found the graph doing something other than what the journal recorded."""


class EffectDeniedError(MainspringError):
    """The effect gate refused a call (a policy, a person, a budget); nothing was called.

    Recorded in the journal: a resumed run meets the same refusal, not the hook again.
    """

    def __init__(self, name: str, reason: str, hook: str = "") -> None:
        by = f" by {hook}" if hook else ""
        super().__init__(f"effect {name!r} was denied{by}: {reason}")
        self.name = name
        self.reason = reason
        self.hook = hook


class EffectError(MainspringError):
    """A recorded effect failure, re-raised on resume or replay with its original type and message."""

    def __init__(self, name: str, error_type: str, message: str) -> None:
        super().__init__(f"effect {name!r} failed: {error_type}: {message}")
        self.name = name
        self.error_type = error_type
        self.message = message


class CorruptStoreError(StoreError):
    """The store's file is damaged: refused on open and left untouched.

    ``mainspring doctor`` reports every problem; restore the store from a backup.
    """
