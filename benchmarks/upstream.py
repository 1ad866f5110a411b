"""A local OpenAI-compatible upstream for the gateway benchmarks (W9, W10), in a process
of its own so that it never shares the client's interpreter.

    python benchmarks/upstream.py [--latency-ms 0] [--tail-ms 0] [--tail-share 0]

Prints its port on the first line of stdout, then serves ``POST /v1/chat/completions``
(JSON, or an SSE stream of chunks when the body asks ``"stream": true``) over HTTP/1.1
keep-alive until killed. Each answer waits ``latency-ms``, or ``tail-ms`` for a
``tail-share`` of requests drawn at random (a heavy tail: W10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}
_BODY = json.dumps(_COMPLETION).encode()
_WORDS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]


def _chunk(delta: dict[str, object], finish: str | None = None, usage: bool = False) -> bytes:
    chunk: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["choices"] = []
        chunk["usage"] = _COMPLETION["usage"]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


_STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": w}) for w in _WORDS)
    + _chunk({}, "stop")
    + _chunk({}, usage=True)
    + b"data: [DONE]\n\n"
)


class Upstream:
    def __init__(self, latency: float, tail: float, share: float, seed: int) -> None:
        self.latency, self.tail, self.share = latency, tail, share
        self.rng = random.Random(seed)

    def delay(self) -> float:
        return self.tail if self.share and self.rng.random() < self.share else self.latency

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                wait = self.delay()
                if wait:
                    await asyncio.sleep(wait)
                if b'"stream":true' in body.replace(b" ", b""):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                        + f"{len(_STREAM):x}\r\n".encode() + _STREAM + b"\r\n0\r\n\r\n"
                    )  # fmt: skip
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(_BODY)}\r\n\r\n".encode() + _BODY
                    )  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _main(args: argparse.Namespace) -> None:
    upstream = Upstream(args.latency_ms / 1e3, args.tail_ms / 1e3, args.tail_share, args.seed)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class UpstreamProcess:
    """The upstream as a child process: ``with UpstreamProcess() as base_url: ...``."""

    def __init__(self, *, latency_ms: float = 0, tail_ms: float = 0, tail_share: float = 0) -> None:
        self.args = [f"--latency-ms={latency_ms}", f"--tail-ms={tail_ms}", f"--tail-share={tail_share}"]
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), *self.args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        time.sleep(0.05)
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tail-ms", type=float, default=0.0)
    parser.add_argument("--tail-share", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(_main(parser.parse_args()))
