"""A served agent for the AG-UI and OpenAI-compatible endpoint tests: a real uvicorn server on
127.0.0.1 (in the test's event loop), over a runtime on SQLite whose gateway has a scripted
model behind it, streaming its tokens.

The model waits on a gate before its first answer of each call (``GatedModel``): a test
opens it once its stream is open, so the tokens reach the stream by construction, not by
the race between a fast model and a subscriber.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI

from mainspring.agents import Agent
from mainspring.models import (
    Gateway,
    Message,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    TextPart,
    ToolCall,
)
from mainspring.models.protocol import StreamEvent
from mainspring.server import create_app
from mainspring.server.config import ServerConfig
from mainspring.server.keys.protocol import KeyInfo, KeyStore, Principal, Scope
from mainspring.tools import tool
from tests.server_harness import serving

ANSWER = "It is sunny in Paris today."


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


@tool(needs_approval=True, name="book_table")
def book_table(place: str) -> str:
    """Book a table (a person approves it first)."""
    return f"booked at {place}"


def forecaster_script(request: ModelRequest) -> Any:
    """Call a tool for the user's message, then answer from its result: ``book...`` asks
    the approved tool, ``hi...`` is answered at once, ``look...`` says a word before its
    tool call, ``fail...`` breaks the model."""
    last = request.messages[-1]
    said = [m.text for m in request.messages if m.role == "user"][-1]
    if said.startswith("fail"):
        return ValueError("the model broke")
    if last.role != "user":
        return f"It is {last.text} today."
    n = sum(1 for m in request.messages if m.role == "tool")
    if said.startswith("book"):
        return [ToolCall(f"b{n}", "book_table", {"place": "Chez Paul"})]
    if said.startswith("hi"):
        return "Hello there, how can I help?"
    if said.startswith("look"):  # words before the tool call: a turn of its own
        call = ToolCall(f"c{n}", "weather", {"city": "Paris"})
        return Message("assistant", [TextPart("Let me look."), call])
    return [ToolCall(f"c{n}", "weather", {"city": "Paris"})]


class GatedModel:
    """A ScriptedModel whose calls wait for ``gate`` (an anyio.Event) before answering."""

    def __init__(self, script: Callable[[ModelRequest], Any], chunk: int = 5) -> None:
        self.inner = ScriptedModel(script, name="scripted", chunk=chunk)
        self.name = "scripted"
        self.gate = anyio.Event()
        self.gate.set()  # open unless a test closes it (close())

    def close(self) -> None:
        self.gate = anyio.Event()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        await self.gate.wait()
        return await self.inner.complete(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        await self.gate.wait()
        async for event in self.inner.stream(request):
            yield event

    async def aclose(self) -> None:
        return None


@dataclass
class MemoryKeys(KeyStore):
    """API keys in a dict (the key store protocol), for the auth tests."""

    keys: dict[str, tuple[str, KeyInfo]] = field(default_factory=dict)

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def create(
        self, tenant: str, scopes: frozenset[Scope], name: str = ""
    ) -> tuple[KeyInfo, str]:
        key_id, secret = secrets.token_hex(4), secrets.token_hex(16)
        info = KeyInfo(key_id, tenant, scopes, name, time.time())
        self.keys[key_id] = (hashlib.sha256(secret.encode()).hexdigest(), info)
        return info, f"ms_{key_id}_{secret}"

    async def verify(self, key: str) -> Principal | None:
        _, key_id, secret = [*key.split("_", 2), "", ""][:3]
        found = self.keys.get(key_id)
        if found is None or found[0] != hashlib.sha256(secret.encode()).hexdigest():
            return None
        info = found[1]
        return Principal(info.key_id, info.tenant, info.scopes)

    async def revoke(self, key_id: str) -> bool:
        return self.keys.pop(key_id, None) is not None

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        return [i for _, i in self.keys.values() if tenant is None or i.tenant == tenant]


def forecaster() -> Agent:
    return Agent("forecaster", "fast", "Answer about the weather.", tools=[weather, book_table])


def build_app(tmp_path: Path, model: GatedModel, keys: MemoryKeys | None = None) -> FastAPI:
    agent = forecaster()
    plain = Agent("helper", "fast", "Help.").graph  # a graph, not an agent, by itself
    return create_app(
        f"sqlite:///{tmp_path / 'served.db'}",
        graphs=[agent, plain],
        keys=keys,
        config=ServerConfig(auth=keys is not None, console=False),
        models=Gateway({"fast": model}),
        tools=agent.toolbox,
    )


def serve(app: FastAPI) -> AbstractAsyncContextManager[str]:
    """Serve ``app`` on a free port of 127.0.0.1 for the block; yields its base URL
    (``tests/server_harness.py``: a client may connect at once)."""
    return serving(app)
