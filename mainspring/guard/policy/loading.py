"""What a Policy holds at one moment: its layers (global, per tenant) and their versions.

Built from the policy's sources (files, directories, rules in code); rebuilt whole on a
reload, so an effect is decided by one consistent version or the next, never a mix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from .layer import Layer, from_files, in_code
from .rules import Rules
from .verdict import PolicyError

TenantSource: TypeAlias = "str | os.PathLike[str] | Rules | Sequence[Any]"


class Loaded:
    """The layers in force: global, then each tenant's on top of it."""

    def __init__(self, global_layers: Sequence[Layer], tenants: Mapping[str, Sequence[Layer]]):
        self.global_layers = tuple(global_layers)
        self.tenants = {t: tuple(layers) for t, layers in tenants.items()}
        self.version = "+".join(layer.version for layer in self.global_layers) or "empty"
        self._for: dict[str | None, tuple[tuple[Layer, ...], str, bool]] = {}

    def layers_for(self, tenant: str | None) -> tuple[tuple[Layer, ...], str, bool]:
        """The layers deciding for ``tenant``, their version, and whether any reads history."""
        found = self._for.get(tenant)
        if found is None:
            own = self.tenants.get(tenant, ()) if tenant is not None else ()
            layers = (*self.global_layers, *own)
            version = self.version
            if own:
                version += "".join(f"+{tenant}:{layer.version}" for layer in own)
            found = (layers, version, any(layer.uses_history for layer in layers))
            if len(self._for) >= 4096:  # tenants without a layer of their own are many
                self._for.clear()
            self._for[tenant] = found
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rules": sum(layer.size for layer in self.global_layers),
            "files": [f for layer in self.global_layers for f in layer.files],
            "tenants": {
                t: {"version": "+".join(x.version for x in ls), "rules": sum(x.size for x in ls)}
                for t, ls in self.tenants.items()
            },
        }


def load(
    name: str,
    paths: Sequence[Path],
    rules: Sequence[Rules],
    cedar: Sequence[str],
    tenants: Mapping[str, TenantSource],
) -> Loaded:
    """Read every source now (PolicyError names the one that fails)."""
    global_layers: list[Layer] = []
    if rules or cedar:
        global_layers.append(in_code(name, rules, cedar))
    tenant_layers: dict[str, list[Layer]] = {}
    if paths:
        top = [p for p in paths if not (p.is_dir() and p.name == "tenants")]
        global_layers.append(from_files(name, top))
        for path in paths:
            root = path if path.name == "tenants" else path / "tenants"
            if path.is_dir() and root.is_dir():
                for sub in sorted(root.iterdir()):
                    if sub.is_dir() and not sub.name.startswith((".", "_")):
                        tenant_layers.setdefault(sub.name, []).append(from_files(sub.name, [sub]))
    for tenant, source in tenants.items():
        tenant_layers.setdefault(str(tenant), []).append(_tenant_layer(str(tenant), source))
    return Loaded(global_layers, tenant_layers)


def _tenant_layer(tenant: str, source: TenantSource) -> Layer:
    items = list(source) if isinstance(source, list | tuple) else [source]
    code = [s for s in items if isinstance(s, Rules)]
    files = [Path(s) for s in items if isinstance(s, str | os.PathLike)]
    if len(code) + len(files) != len(items):
        raise PolicyError(
            f"tenants[{tenant!r}]: give policy paths or Rules objects, not {items!r:.100}"
        )
    if code and files:
        raise PolicyError(f"tenants[{tenant!r}]: give either policy paths or Rules, not both")
    return in_code(tenant, code) if code else from_files(tenant, files)


def watched(paths: Sequence[Path], tenants: Mapping[str, TenantSource]) -> list[Path]:
    """The paths whose files a reload looks at."""
    out = list(paths)
    for source in tenants.values():
        items = list(source) if isinstance(source, list | tuple) else [source]
        out.extend(Path(s) for s in items if isinstance(s, str | os.PathLike))
    return out
