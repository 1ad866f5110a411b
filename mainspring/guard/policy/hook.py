"""The Policy gate hook: policy as code on every effect.

    policy = Policy("policies/", default="allow")
    Runtime(store, gates=[policy, ...], tools=toolbox, models=gateway)

Put it first among the gates (the design's order: tenant scope, policy, budget, limits).
For each effect it builds a :class:`~.request.Request`, asks the global layer's rules and
policies and those of the run's tenant, combines their verdicts (:mod:`.combine`) and
answers the gate: ``Allow`` (its version and rule recorded on ``effect_started``), ``Deny``
(the reason, naming the rule, goes back to the caller; an agent's model reads it),
``Approve`` (a durable interrupt showing the call) or ``Rewrite``. Every decision carries
the policy's version (a content hash) and the deciding rule. Anything that goes wrong in
deciding denies the call (fail closed).

Files are looked at again at most every ``reload_every`` seconds (a stat per file); a
change is loaded whole, and a change that does not load keeps the version in force and
is reported (``policy.reload_error``, the log).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from ...engine.gate import Allow, Approve, Decision, Deny, Effect, Outcome, Rewrite
from ...store.records import tenant_of
from .combine import combine, rewritten
from .history import History
from .layer import stamp
from .loading import Loaded, TenantSource, load, watched
from .request import Request
from .rules import Rules, failure
from .verdict import PolicyError, Verdict

if TYPE_CHECKING:
    from ...engine.runtime import Runtime

log = logging.getLogger("mainspring.guard.policy")


class SpendLedger(Protocol):
    async def spent(self, scope: str, metric: str, bucket: int = 0) -> float: ...


class ToolFacts(Protocol):
    def facts(self, name: str) -> Mapping[str, Any] | None: ...


class Policy:
    """Rules in Python and Cedar deciding every effect (see the module's docstring).

    ``path``: policy files or directories (``*.cedar``, ``*.py``; a directory's
    ``tenants/<tenant>/`` holds that tenant's); ``rules``/``cedar``: rules given in code;
    ``tenants``: more tenant layers (paths or Rules); ``default``: what an effect no rule
    decides comes to; ``ledger``: the budget ledger rules may ask the spend of.
    """

    governs_dangerous_tools = True  # the toolbox leaves dangerous tools to this hook

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        *,
        rules: Iterable[Rules] = (),
        cedar: Iterable[str] = (),
        tenants: Mapping[str, TenantSource] | None = None,
        default: Literal["allow", "deny"] = "allow",
        name: str = "policy",
        reload_every: float | None = 1.0,
        ledger: SpendLedger | None = None,
        spend_metrics: Sequence[str] = ("tokens", "cost", "calls"),
        spend_per: str = "run",
        tools: ToolFacts | None = None,
    ) -> None:
        if default not in ("allow", "deny"):
            raise PolicyError(f"Policy(default={default!r}): use 'allow' or 'deny'")
        if spend_per not in ("run", "thread", "user", "tenant"):
            raise PolicyError(f"Policy(spend_per={spend_per!r}): use run, thread, user or tenant")
        paths = [] if path is None else [path] if isinstance(path, str | os.PathLike) else path
        self.name = name
        self.default = default
        self._paths = [Path(p) for p in paths]
        self._rules, self._cedar = list(rules), list(cedar)
        self._tenants = dict(tenants or {})
        self._watch = watched(self._paths, self._tenants)
        self._every = reload_every
        self._ledger = ledger
        self._metrics = tuple(spend_metrics)
        self._per = spend_per
        self._tools = tools
        self._dangerous: dict[str, bool] = {}
        self._history = History()
        self._bases: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._allows: dict[tuple[str, str], Allow] = {}
        self.reload_error: str | None = None
        self.reloads = 0
        self._stamp = stamp(self._watch) if self._watch else ()
        self._loaded = self._load()
        self._next_check = time.monotonic() + (reload_every or 0.0)

    def _load(self) -> Loaded:
        return load(self.name, self._paths, self._rules, self._cedar, self._tenants)

    @property
    def version(self) -> str:
        """The global layer's version in force (a content hash)."""
        return self._loaded.version

    def status(self) -> dict[str, Any]:
        """The versions in force, their files, and the last reload's error (if it failed)."""
        return {"name": self.name, **self._loaded.describe(), "reload_error": self.reload_error}

    def reload(self) -> bool:
        """Load the files again now; on an error keep the version in force (and say why)."""
        self._stamp = stamp(self._watch) if self._watch else ()
        try:
            loaded = self._load()
        except PolicyError as exc:
            self.reload_error = str(exc)
            log.error("policy %r: reload failed, keeping version %s: %s", self.name,
                      self._loaded.version, exc)  # fmt: skip
            return False
        old, self._loaded = self._loaded.version, loaded
        self.reload_error = None
        self.reloads += 1
        self._bases.clear()
        self._allows.clear()
        log.info("policy %r: reloaded, version %s (was %s)", self.name, loaded.version, old)
        return True

    async def attach(self, runtime: Runtime) -> None:
        """The runtime opens: its journal backs the run history, its toolbox the tool facts."""
        self._history.store = runtime.store
        tools = runtime.services.tools
        if self._tools is None and callable(getattr(tools, "facts", None)):
            self._tools = tools

    # -- the gate ----------------------------------------------------------------------

    async def before(self, effect: Effect) -> Decision:
        if self._every is not None and self._watch:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self._every
                if stamp(self._watch) != self._stamp:
                    self.reload()
        # the run's tenant as the stores scope it: "" for a run started without one (a
        # policy for the default tenant, tenants={"": ...}, applies to those runs)
        layers, version, reads_history = self._loaded.layers_for(tenant_of(effect.metadata))
        verdicts: list[Verdict] = []
        try:
            dangerous = self._is_dangerous(effect)
            history = await self._history.counts(effect) if reads_history else None
            ledger = self._ledger
            req = Request(effect, dangerous=dangerous, history=history,
                          spent=None if ledger is None else self._spent)  # fmt: skip
            spend = None if ledger is None else await self._spend(effect, layers)
            for layer in layers:  # most rules are sync: no coroutine per layer for them
                got = layer.evaluate_now(req, history, spend)
                verdicts.extend(
                    got if type(got) is list else await cast(Awaitable[list[Verdict]], got)
                )
            final = combine(verdicts, dangerous=dangerous, default=self.default, tool=req.tool)
        except Exception as exc:  # a bug or a backend error: the policy fails closed
            # the exception's type only: its message may quote the arguments, and the reason
            # goes to the journal and the model (the log has the message; SecretFilter)
            failure("policy", effect.name, exc)
            final = Verdict(
                "deny", f"the policy failed ({type(exc).__name__}); denied (fail closed)",
                rule="policy",
            )  # fmt: skip
        return self._decision(effect, final, verdicts, version)

    def after(self, effect: Effect, outcome: Outcome) -> None:
        if self._history._runs:  # only runs a history-reading policy met are counted
            self._history.called(effect)

    # -- helpers -----------------------------------------------------------------------

    def _decision(
        self, effect: Effect, final: Verdict, verdicts: list[Verdict], version: str
    ) -> Decision:
        rule, outcome = final.rule or "default", final.outcome
        if outcome == "allow":
            allowed = self._allows.get((version, rule))
            if allowed is None:
                allowed = self._allows[(version, rule)] = Allow(self._basis(version, rule, outcome))
            return allowed
        basis = self._basis(version, rule, outcome)
        said = final.reason or f"{outcome} by policy rule {rule!r}"
        reason = f"{said} [policy {self.name!r} rule {rule!r}, version {version}]"
        if outcome == "deny":
            return Deny(reason, basis)
        if outcome == "approve":
            payload = {"policy": self.name, "rule": rule, "version": version, "reason": said}
            return Approve(reason, payload, basis)
        return Rewrite(rewritten(effect.args, verdicts), reason, basis)

    def _basis(self, version: str, rule: str, outcome: str) -> dict[str, Any]:
        key = (version, rule, outcome)
        found = self._bases.get(key)
        if found is None:
            found = {"policy": self.name, "version": version, "rule": rule, "decision": outcome}
            if len(self._bases) < 4096:
                self._bases[key] = found
        return found

    def _is_dangerous(self, effect: Effect) -> bool:
        if effect.kind != "tool" or self._tools is None or not effect.name.startswith("tool:"):
            return False
        name = effect.name[5:]
        known = self._dangerous.get(name)
        if known is None:
            facts = self._tools.facts(name)
            known = bool(facts and facts.get("dangerous"))
            if facts is not None:
                self._dangerous[name] = known
        return known

    async def _spent(self, effect: Effect, metric: str, per: str) -> float:
        assert self._ledger is not None
        if per == "run":
            value: Any = effect.run_id
        elif per == "thread":
            value = effect.thread
        else:
            value = effect.metadata.get(per)
        if value is None:
            return 0.0
        return float(await self._ledger.spent(f"{per}:{value}", metric))

    async def _spend(self, effect: Effect, layers: Sequence[Any]) -> dict[str, float] | None:
        """The spend record Cedar policies read, fetched only if one that applies reads it."""
        if self._ledger is None:
            return None
        for layer in layers:
            if layer.cedar is not None and layer.cedar.needs(effect.name) & {"spend", "*"}:
                return {m: await self._spent(effect, m, self._per) for m in self._metrics}
        return None
