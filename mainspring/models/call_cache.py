"""The caches a call opts into: exact (content-addressed) and semantic (by meaning).

``cache=True`` (or a TTL in seconds) asks the exact cache: an equal request (model,
messages, tools, output, parameters) is answered from it. ``cache="semantic"`` asks
the exact cache, then the semantic one: the last user message is compared by
meaning with earlier ones asked in the same context (the same model, parameters,
earlier messages and tenant), guarded against negations and changed numbers or
names. Both are scoped by tenant: one tenant's answers never reach another.
A hit spent nothing (usage zero) and says ``cached=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .cache import ResponseCache, cache_key
from .messages import ModelRequest, ModelResponse, Usage

if TYPE_CHECKING:
    from .semantic_cache import SemanticCache

CacheOption = bool | float | str  # False, True, a TTL, or "semantic"


class CallCache:
    __slots__ = ("exact", "semantic", "ttl")

    def __init__(
        self,
        exact: ResponseCache | None,
        semantic: SemanticCache[ModelResponse] | None,
        ttl: float | None,
    ) -> None:
        self.exact = exact
        self.semantic = semantic
        self.ttl = ttl

    def check(self, option: Any) -> None:
        """Refuse an option this gateway cannot honour, saying what to configure."""
        if option is False or option is None:
            return
        if option == "semantic":
            if self.semantic is None:
                raise ValueError(
                    "cache='semantic' needs Gateway(semantic_cache=SemanticCache(LocalEmbeddings()))"
                )
        elif option is True or (isinstance(option, int | float) and option > 0):
            if self.exact is None:
                raise ValueError("cache=True needs Gateway(cache=MemoryCache()) or another cache")
        else:
            raise ValueError(f"cache={option!r}: use True, a TTL in seconds, 'semantic' or False")

    async def lookup(
        self, request: ModelRequest, option: CacheOption, tenant: str | None
    ) -> ModelResponse | None:
        if self.exact is not None:
            hit = await self.exact.get(cache_key(request, scope=tenant or ""))
            if hit is not None:
                return _as_hit(hit)
        if option == "semantic" and self.semantic is not None:
            text, scope = _semantic_key(request, tenant)
            if text:
                found = await self.semantic.lookup(text, scope)
                if found is not None:
                    return _as_hit(found[0])
        return None

    async def store(
        self,
        request: ModelRequest,
        response: ModelResponse,
        option: CacheOption,
        tenant: str | None,
    ) -> None:
        if response.finish_reason not in ("stop", "tool_calls"):
            return  # a cut or filtered answer is not one to give again
        if self.exact is not None:
            ttl = option if isinstance(option, int | float) and option is not True else self.ttl
            await self.exact.set(cache_key(request, scope=tenant or ""), response, ttl)
        if option == "semantic" and self.semantic is not None:
            text, scope = _semantic_key(request, tenant)
            if text:
                await self.semantic.store(text, response, scope)


def _as_hit(response: ModelResponse) -> ModelResponse:
    return msgspec.structs.replace(response, cached=True, usage=Usage(cost=0.0), attempts=[])


def _semantic_key(request: ModelRequest, tenant: str | None) -> tuple[str, str]:
    """The text compared by meaning (the last message, when the user's) and the scope
    holding everything else the answer depends on."""
    from .semantic_cache import cache_scope

    if not request.messages or request.messages[-1].role != "user":
        return "", ""
    context = msgspec.to_builtins(msgspec.structs.replace(request, messages=request.messages[:-1]))
    return request.messages[-1].text, cache_scope(request.model, context, tenant)
