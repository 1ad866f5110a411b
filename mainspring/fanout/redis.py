"""The fan-out over Redis pub/sub: ``PUBLISH`` and ``SUBSCRIBE`` on the channel
``mainspring:events:<key>`` (``<key>``: the store's schema, or its SQLite file).

An option (``--events redis://host:6379/0`` on the server and on every worker) where
the database should carry no notification traffic, or for SQLite stores shared by
processes of one machine. Same payloads as PostgreSQL's (``protocol``); a batch is
one pipelined round trip. Listening: a pub/sub connection of its own, health-checked
every ``ping_every`` idle seconds; Redis pub/sub is not durable either, so the
subscribers resync on every (re)subscription.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.asyncio as redis
from redis.exceptions import RedisError

from ..store import Store
from .fanout import FanoutError
from .protocol import Announcement, decode, encode, store_key


class RedisTransport:
    """See the module's docstring."""

    name = "redis"

    def __init__(self, url: str, *, ping_every: float = 30.0, connect_timeout: float = 5.0) -> None:
        if ping_every <= 0 or connect_timeout <= 0:
            raise ValueError("RedisTransport: ping_every and connect_timeout must be > 0")
        self.url = url
        self._ping_every, self._connect_timeout = ping_every, connect_timeout
        self.key = self.channel = ""
        self._client: redis.Redis | None = None

    async def open(self, store: Store) -> None:
        try:
            self.key = store_key(store)
        except ValueError as exc:
            raise FanoutError(str(exc)) from None
        self.channel = f"mainspring:events:{self.key}"
        try:
            client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=self._connect_timeout,
                socket_keepalive=True,
                health_check_interval=self._ping_every,
                client_name=f"mainspring-events:{self.key}",  # CLIENT LIST tells it apart
            )
        except ValueError as exc:
            raise FanoutError(f"events {redacted(self.url)}: {exc}") from None
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise FanoutError(
                f"cannot reach Redis at {redacted(self.url)} for the event fan-out: {exc}"
            ) from None
        self._client = client

    def _live(self) -> redis.Redis:
        if self._client is None:
            raise FanoutError("the Redis fan-out is not open; the runtime opens it")
        return self._client

    async def send(self, batch: Sequence[Announcement]) -> None:
        client, channel, key = self._live(), self.channel, self.key
        if len(batch) == 1:
            await client.publish(channel, encode(key, batch[0]))
            return
        pipe = client.pipeline(transaction=False)
        for announcement in batch:
            pipe.publish(channel, encode(key, announcement))
        await pipe.execute()

    async def listen(
        self, heard: Callable[[Announcement], None], ready: Callable[[], None]
    ) -> None:
        pubsub = self._live().pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            ready()
            while True:
                message = await pubsub.get_message(timeout=self._ping_every)
                if message is None or message.get("type") != "message":
                    continue
                data = message["data"]
                payload = data.decode() if isinstance(data, bytes) else str(data)
                announcement = decode(self.key, payload)
                if announcement is not None:
                    heard(announcement)
        finally:
            with anyio.move_on_after(self._connect_timeout, shield=True):
                await pubsub.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def redacted(url: str) -> str:
    """``url`` without its password (it goes into messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
