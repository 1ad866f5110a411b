"""The Python client's round trips against a real server (not a workload of BENCHMARKS.md).

    python benchmarks/client_roundtrip.py [--runs 200]

Starts ``create_app`` under uvicorn in a subprocess on a temporary SQLite store (rate limit
lifted: it measures the client and the server, not the limiter) serving
``tests.cli_graphs:support``, then times: sequential ``Client.run`` (one ``POST /v1/runs``
with ``wait``), ``get_run``, concurrent ``AsyncClient.run``, a finished run's
``stream``; and the same graph run in-process (``SyncRuntime.run``) for scale.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from mainspring import SyncRuntime
from mainspring.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys, uvicorn
from mainspring.server import ServerConfig, create_app
app = create_app(sys.argv[1], graphs=["tests.cli_graphs:support"],
                 config=ServerConfig(auth=False, rate=1e9, burst=10**9))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    n = parser.parse_args().runs
    sys.path.insert(0, str(ROOT))
    from tests.cli_graphs import support

    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, f"sqlite:///{tmp}/served.db", str(port)], cwd=ROOT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with Client(url) as ms:
                while not ms.ready():
                    time.sleep(0.05)
                ms.run("support", {"text": "warm up"})
                lat = []
                t0 = time.perf_counter()
                for i in range(n):
                    t = time.perf_counter()
                    ms.run("support", {"text": f"hi {i}"})
                    lat.append(time.perf_counter() - t)
                rate = n / (time.perf_counter() - t0)
                print(f"Client.run, sequential x{n}: {rate:.0f} runs/s, "
                      f"p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms")  # fmt: skip
                run = ms.start("support", {"text": "read me"}, wait=True)
                lat = []
                for _ in range(n):
                    t = time.perf_counter()
                    ms.get_run(run.run_id)
                    lat.append(time.perf_counter() - t)
                print(f"Client.get_run x{n}: p50 {pct(lat, 0.5):.2f} ms")

            async def concurrent() -> None:
                async with AsyncClient(url) as ms:
                    t0 = time.perf_counter()
                    async with anyio.create_task_group() as tg:
                        for i in range(n):
                            tg.start_soon(ms.run, "support", {"text": f"at once {i}"})
                    rate = n / (time.perf_counter() - t0)
                    print(f"AsyncClient.run, {n} at once: {rate:.0f} runs/s")
                    lat, size = [], 0
                    for _ in range(50):
                        t = time.perf_counter()
                        size = len([e async for e in ms.stream(run.run_id)])
                        lat.append(time.perf_counter() - t)
                    print(f"stream of a finished run ({size} events) x50: "
                          f"p50 {pct(lat, .5):.2f} ms")  # fmt: skip

            anyio.run(concurrent)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        with SyncRuntime.open(f"sqlite:///{tmp}/local.db") as rt:
            rt.run(support, {"text": "warm up"})
            t0 = time.perf_counter()
            for i in range(n):
                rt.run(support, {"text": f"hi {i}"})
            print(f"in-process SyncRuntime.run x{n}: {n / (time.perf_counter() - t0):.0f} runs/s")


if __name__ == "__main__":
    main()
