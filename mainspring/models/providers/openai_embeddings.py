"""Embeddings from an OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM,
Ollama, llama.cpp, TEI's OpenAI route): texts sent in batches, a few batches at a
time, vectors returned in the order of the texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import httpx

from .._http import HTTPTransport, KeySource, SecretsProvider
from ..errors import ModelError, ProviderError
from ..messages import Usage
from .openai_chat import OPENAI_BASE_URL

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIEmbeddings:
    """``embed(texts)`` for ``model``. ``dimensions`` is sent when given (the text-embedding-3
    models shorten their vectors); otherwise it is the model's known size, or learned from
    the first answer (0 until then). ``usage`` adds up the tokens of every call."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        secrets: SecretsProvider | None = None,
        name: str = "openai-embeddings",
        batch_size: int = 256,
        max_concurrency: int = 4,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout = 60.0,
        http2: bool | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be at least 1")
        self.name = name
        self.model = model
        self._send_dimensions = dimensions
        self.dimensions = dimensions or KNOWN_DIMENSIONS.get(model, 0)
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.usage = Usage()
        url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self._http = HTTPTransport(
            name,
            url,
            KeySource(api_key_env, api_key, secrets),
            lambda key: {"authorization": f"Bearer {key}"},
            key_required=url == OPENAI_BASE_URL,
            headers=headers,
            timeout=timeout,
            max_connections=max(max_concurrency, 10),
            http2=http2,
            client=client,
        )

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings({self.model!r}, base_url={self._http.base_url!r})"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        batches = [
            list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        results: list[list[list[float]]] = [[] for _ in batches]
        limit = anyio.Semaphore(self.max_concurrency)

        async def run(i: int) -> None:
            async with limit:
                results[i] = await self._batch(batches[i])

        if len(batches) == 1:
            return await self._batch(batches[0])
        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(batches)):
                    tg.start_soon(run, i)
        except BaseExceptionGroup as group:
            # A failed batch cancels the others; the caller gets the one error that did it,
            # in the models.errors tree like every provider call, not a group of one.
            failed = _first_model_error(group)
            if failed is None:
                raise
            raise failed from None
        return [vector for batch in results for vector in batch]

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._send_dimensions:
            body["dimensions"] = self._send_dimensions
        data = await self._http.post_json("/embeddings", body, self.model)
        rows = sorted(data.get("data") or (), key=lambda row: row.get("index", 0))
        if len(rows) != len(texts):
            raise ProviderError(
                f"{self.name} model {self.model!r}: {len(rows)} vectors for {len(texts)} texts; "
                "the server does not batch as the OpenAI API does (try batch_size=1)",
                provider=self.name,
                model=self.model,
            )
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
        if vectors and not self.dimensions:
            self.dimensions = len(vectors[0])
        wire = data.get("usage") or {}
        self.usage += Usage(input_tokens=wire.get("prompt_tokens") or 0)
        return vectors

    async def aclose(self) -> None:
        await self._http.aclose()


def _first_model_error(group: BaseExceptionGroup[BaseException]) -> ModelError | None:
    for exc in group.exceptions:
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_model_error(exc)
            if found is not None:
                return found
    return None
