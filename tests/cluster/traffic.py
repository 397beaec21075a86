"""Traffic for cluster tests: a steady load of requests through nginx, and nginx's JSON log."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from fastpost.cluster.lifecycle import missing_binaries
from fastpost.cluster.processes import free_port
from fastpost.cluster.topology import Part

# A request of the load: (client, request id) -> response.
Send = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


@dataclass
class Load:
    """Counts of a steady load: what was sent, what failed and how, by phase."""

    phase: str = "warm-up"
    sent: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def request_id(self, kind: str) -> str:
        return f"{self.phase}.{kind}.{next(self._ids)}"


async def steady_load(
    base_url: str,
    requests: dict[str, Send],
    *,
    load: Load,
    until: Callable[[], bool],
    concurrency: int = 6,
    pause: float = 0.01,
    keepalive: bool = True,
) -> Load:
    """Send `requests` in turn from `concurrency` clients until `until()` says stop.

    A failure is a transport error or a 5xx: what a user of the site would see. Each client
    pauses `pause` s between requests, so that the load stays steady on a shared machine.
    `keepalive=False`: a new connection for every request.
    """
    kinds = list(requests)

    async def client(n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
            for i in itertools.count(n):
                if until():
                    return
                kind = kinds[i % len(kinds)]
                request_id = load.request_id(kind)
                try:
                    response = await requests[kind](http, request_id)
                except httpx.TransportError as exc:
                    load.failures.append(f"{request_id}: {type(exc).__name__} {exc}")
                else:
                    if response.status_code >= 500:
                        load.failures.append(
                            f"{request_id}: {response.status_code} {response.text[:200]}"
                        )
                load.sent[load.phase] += 1
                await asyncio.sleep(pause)

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return load


def for_seconds(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def access_log(path: Path, request_id_prefix: str = "") -> list[dict[str, object]]:
    """Return nginx's JSON access lines whose request id starts with `request_id_prefix`,
    once nginx has flushed them (its log is buffered for up to a second)."""
    time.sleep(1.5)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if str(line["request_id"]).startswith(request_id_prefix)]


def served_by(line: dict[str, object]) -> int:
    """Return the port of the instance that answered (the last one nginx tried)."""
    return int(str(line["upstream_addr"]).split(",")[-1].strip().rsplit(":", 1)[1])


def on_free_ports(parts: list[Part]) -> list[Part]:
    """Return `parts` moved to ports free at the moment, as the rules of the suite ask."""
    return [replace(part, port=free_port()) for part in parts]


def skip_without_binaries() -> None:
    """Skip the calling test module when nginx, redis-server or PostgreSQL is missing,
    saying how to install it."""
    problems = missing_binaries()
    if problems:
        pytest.skip(" ".join(problems), allow_module_level=True)
