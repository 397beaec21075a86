"""Liveness and readiness."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.observability.statements import record_statements
from tests.conftest import make_settings


async def test_health_answers_without_touching_the_database(client: httpx.AsyncClient) -> None:
    with record_statements() as log:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert log == []


async def test_ready_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["database"] == "up"


async def test_ready_is_503_with_the_reason_when_the_database_is_down() -> None:
    # Nothing listens on port 1: the connection is refused at once.
    app: FastAPI = create_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none"))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get("/health/ready")
        assert (await client.get("/health")).status_code == 200  # still alive
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "down"
    assert body["reason"]
