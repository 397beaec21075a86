"""fastpost.bench.in_process: each app's CPU per request, served in alternating rounds."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastpost.bench.in_process import cpu_per_request


def _app(rounds_of_hashing: int, started: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(f"hash x{rounds_of_hashing}")
        yield

    async def page(request: Request) -> Response:
        digest = request.url.query.encode()
        for _ in range(rounds_of_hashing):
            digest = hashlib.sha256(digest).digest()
        return Response(digest.hex())

    return Starlette(routes=[Route("/page", page)], lifespan=lifespan)


async def test_each_app_is_started_measured_per_round_and_its_body_kept() -> None:
    started: list[str] = []
    apps = {"light": _app(1, started), "heavy": _app(2000, started)}

    costs = await cpu_per_request(apps, "/page", "x=1", rounds=3, requests_per_round=40)

    assert started == ["hash x1", "hash x2000"]
    assert [len(cost.rounds) for cost in costs.values()] == [3, 3]
    assert costs["light"].body == hashlib.sha256(b"x=1").hexdigest().encode()
    # 2,000 hashes a request against one: the heavier app costs more in every round.
    assert all(h > lt for h, lt in zip(costs["heavy"].rounds, costs["light"].rounds, strict=True))
    assert costs["heavy"].best <= costs["heavy"].median
