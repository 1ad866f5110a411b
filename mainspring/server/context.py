"""What every request handler reaches: the runtime, the catalog, the keys, the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from ..engine.runtime import Runtime
    from .catalog import GraphCatalog
    from .config import ServerConfig
    from .keys.protocol import KeyStore


@dataclass(slots=True)
class ServerState:
    """The server's parts, built by ``create_app`` and kept in ``app.state.mainspring``."""

    runtime: Runtime
    catalog: GraphCatalog
    config: ServerConfig
    keys: KeyStore | None
    started_at: float = 0.0
    ready: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # parts routes add (stream hub, ...)


def server_state(conn: HTTPConnection) -> ServerState:
    state: ServerState = conn.app.state.mainspring
    return state
