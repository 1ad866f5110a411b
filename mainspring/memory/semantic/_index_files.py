"""Vector indexes saved beside an embedded store, so reopening skips the HNSW build.

Building a 20k-vector HNSW graph took 40 s on two threads of the (loaded) test
machine; saving it took 0.07 s and loading it 0.06 s. On close the memory saves every tenant's index with the change
number it reflects; on open it loads them and replays only the changes after that
number (the change feed holds every later change, so a snapshot is never wrong, only
older). A snapshot of another store (its identity differs), another model, or from
the future (a change number the store has not reached) is ignored and the indexes are
rebuilt from the feed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .index import AutoIndex
from .protocols import VectorIndex

log = logging.getLogger(__name__)
FORMAT = 1


def save(directory: Path, seq: int, identity: str, indexes: dict[str, VectorIndex]) -> bool:
    """Write a snapshot (atomically: a new directory renamed over the old one)."""
    if not all(isinstance(i, AutoIndex) for i in indexes.values()):
        return False  # a caller's own index type: nothing we know how to save
    fresh = directory.with_name(directory.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    tenants: dict[str, dict[str, Any]] = {}
    for tenant, index in indexes.items():
        name = hashlib.sha256(tenant.encode()).hexdigest()[:24]
        entry = index.save(fresh / name)  # type: ignore[attr-defined]
        tenants[tenant] = {**entry, "file": name}
    some = next(iter(indexes.values()), None)
    manifest = {
        "format": FORMAT,
        "seq": seq,
        "identity": identity,
        "dimensions": getattr(some, "dimensions", 0),
        "tenants": tenants,
    }
    (fresh / "manifest.json").write_text(json.dumps(manifest))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(fresh, directory)
    shutil.rmtree(old, ignore_errors=True)
    return True


def load(
    directory: Path, identity: str, dimensions: int
) -> tuple[int, dict[str, VectorIndex]] | None:
    """The saved indexes and their change number, or None (then rebuild from the feed)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if (manifest["format"], manifest["identity"]) != (FORMAT, identity):
            return None
        if manifest["tenants"] and manifest["dimensions"] != dimensions:
            return None
        indexes: dict[str, VectorIndex] = {
            tenant: AutoIndex.load(directory / entry["file"], entry, dimensions)
            for tenant, entry in manifest["tenants"].items()
        }
        return int(manifest["seq"]), indexes
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged snapshot only costs a rebuild
        log.warning("semantic memory: ignoring the index snapshot in %s: %s", directory, exc)
        return None
