"""A layer of policy: the rules of some files (or given in code), with one version.

The global policy is one layer, each tenant's policy another. A layer's version is a
content hash of what it holds (the files' names and bytes; for rules given in code, their
ids and source), so the journal names exactly which policy decided.

Files: ``*.cedar`` (Cedar policies) and ``*.py`` (Python modules defining one or more
:class:`~.rules.Rules`); names starting with ``_`` or ``.`` are skipped. A directory's
``tenants/<tenant>/`` subdirectories are the tenant layers (see :mod:`.hook`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import os
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .request import Request
from .rules import Rules
from .verdict import PolicyError, Verdict

if TYPE_CHECKING:
    from .cedar import CedarRules

_modules = itertools.count()  # module names for policy files: each load is a fresh module


class Layer:
    """The Python rules and Cedar policies of one layer, and its version."""

    __slots__ = ("cedar", "files", "name", "rules", "uses_history", "version")

    def __init__(
        self,
        name: str,
        version: str,
        rules: Sequence[Rules] = (),
        cedar: CedarRules | None = None,
        files: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.rules = tuple(rules)
        self.cedar = cedar if cedar is not None and len(cedar) else None
        self.files = tuple(files)
        cedar_history = self.cedar is not None and bool(
            self.cedar.reads & {"history", "effects", "*"}
        )
        self.uses_history = cedar_history or any(r.uses_history for r in self.rules)

    @property
    def size(self) -> int:
        """How many rules and policies the layer holds."""
        return sum(len(r) for r in self.rules) + (len(self.cedar) if self.cedar else 0)

    def evaluate_now(
        self,
        req: Request,
        history: Mapping[str, int] | None,
        spend: Mapping[str, float] | None,
    ) -> list[Verdict] | Awaitable[list[Verdict]]:
        """The verdicts without awaiting while every rule answers at once; else the rest of
        the work to await, going on from where it stopped (no rule runs twice)."""
        out: list[Verdict] = []
        for rules in self.rules:
            got = rules.evaluate_now(req)
            if type(got) is not list:  # (rare: a rule to await) the rest of the work
                rest = cast(Awaitable[list[Verdict]], got)
                return self._rest(req, history, spend, self.rules.index(rules) + 1, out, rest)
            out.extend(got)
        if self.cedar is not None:
            out.extend(self.cedar.evaluate(req, history, spend))
        return out

    async def evaluate(
        self,
        req: Request,
        history: Mapping[str, int] | None,
        spend: Mapping[str, float] | None,
    ) -> list[Verdict]:
        return await self._rest(req, history, spend, 0, [], None)

    async def _rest(
        self,
        req: Request,
        history: Mapping[str, int] | None,
        spend: Mapping[str, float] | None,
        start: int,
        out: list[Verdict],
        pending: Awaitable[list[Verdict]] | None,
    ) -> list[Verdict]:
        """``out`` with the verdicts of ``pending`` (the rest of one set of rules), of the
        sets from the ``start``-th on, and of the Cedar policies."""
        if pending is not None:
            out.extend(await pending)
        for rules in self.rules[start:]:
            out.extend(await rules.evaluate(req))
        if self.cedar is not None:
            out.extend(self.cedar.evaluate(req, history, spend))
        return out


def in_code(name: str, rules: Sequence[Rules] = (), cedar: Sequence[str] = ()) -> Layer:
    """A layer of rules given in code (versioned by their ids and source)."""
    digest = hashlib.sha256()
    for r in rules:
        for rule in r:
            digest.update(rule.id.encode() + b"\0" + _source(rule.fn).encode() + b"\0")
    texts = [(f"<cedar {i + 1}>", text) for i, text in enumerate(cedar)]
    for file, text in texts:
        digest.update(file.encode() + b"\0" + text.encode() + b"\0")
    return Layer(name, digest.hexdigest()[:12], rules, _cedar(texts))


def from_files(name: str, paths: Iterable[Path]) -> Layer:
    """The layer the policy files at ``paths`` (files, or directories read one level deep)
    define; a file that does not parse or load raises PolicyError naming it."""
    files = policy_files(paths)
    digest = hashlib.sha256()
    texts: list[tuple[str, str]] = []
    rules: list[Rules] = []
    for path in files:
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        if path.suffix == ".cedar":
            texts.append((path.name, data.decode()))
        else:
            rules.extend(_load_module(path))
    return Layer(name, digest.hexdigest()[:12], rules, _cedar(texts), [str(p) for p in files])


def _cedar(texts: list[tuple[str, str]]) -> CedarRules | None:
    """The Cedar policies of ``texts`` (cedarpy loads only when there are some)."""
    if not texts:
        return None
    try:
        from .cedar import CedarRules
    except ImportError:
        raise PolicyError("Cedar policies need cedarpy: pip install 'mainspring[policy]'") from None
    return CedarRules(texts)


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.cedar`` and ``.py`` files at ``paths``, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and _is_policy(p)))
        elif path.is_file():
            if not _is_policy(path):
                raise PolicyError(f"{path}: policy files end in .cedar or .py")
            found.append(path)
        else:
            raise PolicyError(f"{path}: no such policy file or directory")
    return found


def stamp(paths: Iterable[Path]) -> tuple[Any, ...]:
    """What changes when a policy file is added, removed or edited (a stat per file)."""
    out: list[Any] = []
    for path in paths:
        try:
            if path.is_dir():
                with os.scandir(path) as entries:
                    for entry in sorted(entries, key=lambda e: e.name):
                        if entry.is_file() and _is_policy(Path(entry.name)):
                            st = entry.stat()
                            out.append((entry.path, st.st_mtime_ns, st.st_size))
                        elif entry.is_dir() and entry.name == "tenants":
                            out.append(
                                stamp(Path(entry.path, t) for t in sorted(os.listdir(entry.path)))
                            )
            else:
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError as exc:
            out.append((str(path), "missing", str(exc)))
    return tuple(out)


def _is_policy(path: Path) -> bool:
    return path.suffix in (".cedar", ".py") and not path.name.startswith(("_", "."))


def _load_module(path: Path) -> list[Rules]:
    """Run a Python policy file as a fresh module; the Rules it defines."""
    spec = importlib.util.spec_from_file_location(f"_mainspring_policy_{next(_modules)}", path)
    if spec is None or spec.loader is None:
        raise PolicyError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PolicyError(
            f"{path}: the module failed to load: {type(exc).__name__}: {exc}"
        ) from None
    found = [v for v in vars(module).values() if isinstance(v, Rules)]
    if not found:
        raise PolicyError(f"{path}: defines no rules; make a `rules = Rules()` and decorate them")
    return found


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return str(getattr(fn, "__qualname__", repr(fn)))
