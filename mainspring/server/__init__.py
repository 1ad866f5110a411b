"""Mainspring's HTTP API and web console (``mainspring serve``): see docs/server.md."""

from __future__ import annotations

from .app import create_app
from .catalog import GraphCatalog, UnknownGraphError
from .config import ServerConfig
from .keys.protocol import ALL_TENANTS, KeyInfo, KeyStore, Principal, Scope

__all__ = [
    "ALL_TENANTS",
    "GraphCatalog",
    "KeyInfo",
    "KeyStore",
    "Principal",
    "Scope",
    "ServerConfig",
    "UnknownGraphError",
    "create_app",
]
