"""CPU time per request of ASGI apps called directly, in this process: no HTTP server, no
socket, no load generator.

What it measures is the app's own cost (framework, middleware, queries' client side,
serialisation), the part that differs between two implementations of one endpoint; what
uvicorn and the kernel add is the same for both and is left out. Process CPU time counts
only this process (the database's work is in its own), and the apps run in short
alternating rounds: a burst of load from the machine's other tenants then lands on every
app alike, and the quietest round of each (the minimum) is the least disturbed figure.
On a machine shared with other tenants, wrk's requests per second move between runs far
more than these figures do (benchmarks/bench_realworld.py prints both, for the same servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import Message


@dataclass(frozen=True)
class InProcessCost:
    """Microseconds of process CPU per request, one figure per round."""

    rounds: list[float]
    body: bytes

    @property
    def best(self) -> float:
        return min(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


async def _serve(app: Any, path: str, query: bytes, requests: int, concurrency: int) -> bytes:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    body = b""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal body
        if message["type"] == "http.response.body":
            body = message.get("body", b"")

    async def client(count: int) -> None:
        for _ in range(count):
            await app({**scope, "state": {}}, receive, send)

    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    return body


async def cpu_per_request(
    apps: Mapping[str, Any],
    path: str,
    query: str = "",
    *,
    rounds: int = 15,
    requests_per_round: int = 400,
    concurrency: int = 8,
) -> dict[str, InProcessCost]:
    """Serve `GET path?query` from each app (Starlette or FastAPI, run with its lifespan)
    in alternating rounds, after a warm-up round each."""
    raw_query = query.encode()
    per_round = requests_per_round - requests_per_round % concurrency
    costs: dict[str, list[float]] = {name: [] for name in apps}
    bodies: dict[str, bytes] = {}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        for name, app in apps.items():
            bodies[name] = await _serve(app, path, raw_query, per_round, concurrency)
        for _ in range(rounds):
            for name, app in apps.items():
                started = time.process_time()
                await _serve(app, path, raw_query, per_round, concurrency)
                costs[name].append((time.process_time() - started) / per_round * 1e6)
    return {name: InProcessCost(costs[name], bodies[name]) for name in apps}


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Run with exactly `env` as this process's environment (the one a server would get:
    the apps read their settings from it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run this process on core `cpu` (where the servers ran), or where it is if None."""
    affinity = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
