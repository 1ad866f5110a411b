"""The model gateway: messages, providers, routing, caching, accounting and budgets.

Reached from a node as ``await ctx.model(...)``, a journaled effect through the
engine's gate (``Runtime(store, models=Gateway(...))``); usable on its own as
``await Gateway(...).complete(...)``. The HTTP providers (httpx), the local
embedding model (numpy), the Redis and SQLite caches and the budget ledgers load
when first named.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from .budget_gate import BudgetGate
from .budget_ledger import BudgetLedger
from .budget_ledger_memory import MemoryLedger
from .budgets import Budget, denial_error
from .cache import MemoryCache, ResponseCache, cache_key
from .errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ContentFilteredError,
    ContextTooLongError,
    LoopDetectedError,
    ModelError,
    ModelTimeoutError,
    NoModelAvailableError,
    OutputValidationError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
    StreamInterruptedError,
    UnknownModelError,
)
from .gateway import Gateway
from .loop_breaker import LoopBreaker
from .messages import (
    ImagePart,
    Message,
    ModelRequest,
    ModelResponse,
    OutputSpec,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
    assistant,
    system,
    tool_result,
    user,
)
from .pricing import PriceTable
from .protocol import (
    EmbeddingProvider,
    ModelProvider,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamRestart,
    TextDelta,
    ToolCallDelta,
)
from .providers.scripted import ScriptedModel
from .routing import Router
from .spec import Hedge, ModelSpec, Price

if TYPE_CHECKING:
    from .budget_ledger_postgres import PostgresLedger
    from .budget_ledger_sqlite import SQLiteLedger
    from .cache_redis import RedisCache
    from .cache_sqlite import SQLiteCache
    from .classify import CentroidRouter, Route, Rule, RuleRouter
    from .embeddings_local import LocalEmbeddings
    from .jsonstream import PartialJSON
    from .providers.anthropic import Anthropic
    from .providers.openai_chat import OpenAIChat
    from .providers.openai_embeddings import OpenAIEmbeddings
    from .providers.openai_responses import OpenAIResponses
    from .semantic_cache import SemanticCache
    from .speculate import Candidate, Speculation, speculate
    from .tokens import count_message_tokens, count_tokens

# name -> the module that defines it, imported on first use
_LAZY: dict[str, str] = {
    "PostgresLedger": ".budget_ledger_postgres",
    "SQLiteLedger": ".budget_ledger_sqlite",
    "CentroidRouter": ".classify",
    "Route": ".classify",
    "Rule": ".classify",
    "RuleRouter": ".classify",
    "LocalEmbeddings": ".embeddings_local",
    "SemanticCache": ".semantic_cache",
    "Anthropic": ".providers.anthropic",
    "OpenAIChat": ".providers.openai_chat",
    "OpenAIResponses": ".providers.openai_responses",
    "OpenAIEmbeddings": ".providers.openai_embeddings",
    "RedisCache": ".cache_redis",
    "SQLiteCache": ".cache_sqlite",
    "PartialJSON": ".jsonstream",
    "Candidate": ".speculate",
    "Speculation": ".speculate",
    "speculate": ".speculate",
    "count_tokens": ".tokens",
    "count_message_tokens": ".tokens",
}

if not TYPE_CHECKING:
    __getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Anthropic",
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExceededError",
    "BudgetGate",
    "BudgetLedger",
    "Candidate",
    "CentroidRouter",
    "ContentFilteredError",
    "ContextTooLongError",
    "EmbeddingProvider",
    "Gateway",
    "Hedge",
    "ImagePart",
    "LocalEmbeddings",
    "LoopBreaker",
    "LoopDetectedError",
    "MemoryCache",
    "MemoryLedger",
    "Message",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ModelSpec",
    "ModelTimeoutError",
    "NoModelAvailableError",
    "OpenAIChat",
    "OpenAIEmbeddings",
    "OpenAIResponses",
    "OutputSpec",
    "OutputValidationError",
    "OverloadedError",
    "PartialJSON",
    "PostgresLedger",
    "Price",
    "PriceTable",
    "ProviderError",
    "RateLimitedError",
    "ReasoningDelta",
    "RedisCache",
    "ResponseCache",
    "Route",
    "Router",
    "Rule",
    "RuleRouter",
    "SQLiteCache",
    "SQLiteLedger",
    "ScriptedModel",
    "SemanticCache",
    "Speculation",
    "StreamEnd",
    "StreamEvent",
    "StreamInterruptedError",
    "StreamRestart",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "UnknownModelError",
    "Usage",
    "assistant",
    "cache_key",
    "count_message_tokens",
    "count_tokens",
    "denial_error",
    "speculate",
    "system",
    "tool_result",
    "user",
]
