"""A bounded wait for the store on reads: a GET whose answer has not begun within
``ServerConfig.request_store_timeout`` seconds is answered 503 ``store_unavailable``.

When the store is down, the runtime retries each call for its ``retry_for`` (30 s by
default), which is right for a run's writes but leaves a client hanging. A read has no
side effect, so it is safe to give up on: the client gets a 503 to retry, the runtime
keeps retrying in the background. Writes (POST) are not cut short (a write given up on
half way would leave the client unsure whether it happened); they wait for the runtime's
own ``retry_for``. The deadline is for the answer to *begin*: a stream, once open, runs on.
"""

from __future__ import annotations

import logging
import math

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

log = logging.getLogger("mainspring.server")

_READS = frozenset({"GET", "HEAD"})


class StoreWait:
    """ASGI middleware: the deadline above, for HTTP GET and HEAD requests."""

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.timeout is None or scope["type"] != "http" or scope["method"] not in _READS:
            await self.app(scope, receive, send)
            return
        began = False
        with anyio.CancelScope(deadline=anyio.current_time() + self.timeout) as waiting:

            async def sending(message: Message) -> None:
                nonlocal began
                if message["type"] == "http.response.start":
                    began = True
                    waiting.deadline = math.inf  # answering: no deadline on the body
                await send(message)

            await self.app(scope, receive, sending)
        if waiting.cancelled_caught and not began:
            log.warning("%s %s: no answer within %s s (the store?): 503", scope["method"],
                        scope["path"], self.timeout)  # fmt: skip
            body = error_body("store_unavailable", "the store is unavailable; retry")
            await _answer_json(send, 503, body)


async def _answer_json(send: Send, status: int, body: object) -> None:
    content = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
               (b"content-length", str(len(content)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
