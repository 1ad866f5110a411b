"""A server process for the stream restart test: ``python -m tests.stream_server DB RUN_ID LIMIT``.

Serves a runtime on the SQLite file DB (crash recovery on: a run a killed server left is
resumed at start), starts the ticker run RUN_ID once (idempotent by id: a restarted
server starts nothing), and prints its port on stdout when it listens.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn

from mainspring.server import ServerConfig, create_app
from mainspring.server.context import ServerState
from tests.stream_graphs import ticker


async def main(db: str, run_id: str, limit: int) -> None:
    app = create_app(
        f"sqlite:///{db}", graphs=[ticker], config=ServerConfig(auth=False, console=False)
    )

    async def start(state: ServerState) -> None:
        await state.runtime.start(ticker, {"limit": limit, "delay": 0.01}, run_id=run_id)

    app.state.mainspring.extras["on_start"] = [start]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
