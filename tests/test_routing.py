"""Routers skip paths outside their prefix, without changing what any request gets."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from starlette.routing import Match

from fastpost.health import router as health_router
from fastpost.routing import PrefixRouter


def test_a_router_does_not_try_its_routes_for_a_path_outside_its_prefix() -> None:
    router = PrefixRouter(prefix="/health")
    scope = {"type": "http", "path": "/posts/1", "root_path": "", "method": "GET"}

    assert router.matches(scope) == (Match.NONE, {})


async def test_every_router_still_answers_its_own_paths(client: httpx.AsyncClient) -> None:
    # /health is included last but one: its request passes every other router first.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/api/tags")).status_code == 200
    assert (await client.get("/posts")).status_code == 200


async def test_wrong_method_is_405_and_unknown_path_under_a_prefix_is_404(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.delete("/health")).status_code == 405
    assert (await client.get("/health/nowhere")).status_code == 404
    assert (await client.get("/nowhere")).status_code == 404


async def test_routes_match_behind_a_root_path(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/behind/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/behind/proxy/health")

    assert response.status_code == 200
    assert isinstance(health_router, PrefixRouter)
