"""Every failure answers in one JSON shape, with the right status, and never a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.settings import Settings
from tests.conftest import Factory, make_settings


async def test_an_unknown_route_is_a_404_in_the_shared_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "code": "not_found"}


async def test_a_wrong_method_is_a_405_in_the_shared_shape(client: httpx.AsyncClient) -> None:
    response = await client.put("/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_validation_errors_list_each_field(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    response = await client.post(
        "/posts/", headers=user.headers, json={"title": "", "content": "x", "colour": "red"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert {e["field"] for e in body["errors"]} == {"title", "colour"}
    assert all(e["message"] and e["type"] for e in body["errors"])


async def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    huge = {"title": "big", "content": "x" * 2_000_000}
    response = await client.post("/posts/", headers=user.headers, json=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    # Nothing was written.
    assert (await client.get("/posts/")).json()["items"] == []


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"title": "big", "content": "'
        for _ in range(40):
            yield b"y" * 64_000
        yield b'"}'

    response = await client.post(
        "/posts/",
        headers={**user.headers, "content-type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_malformed_json_is_a_422_not_a_500(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    response = await client.post(
        "/posts/",
        headers={**user.headers, "content-type": "application/json"},
        content=b'{"title": ',
    )
    assert response.status_code == 422


async def test_an_unexpected_error_is_a_500_without_internals(
    database_url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastpost.app import create_app
    from fastpost.posts import service

    async def explode(**_: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "list_popular_posts", explode)
    app: FastAPI = create_app(make_settings(database_url))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get("/posts/popular")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}


async def test_a_cross_origin_body_over_the_limit_gets_its_413_with_cors_headers(
    settings: Settings,
) -> None:
    # Without CORS headers a browser shows the page a network failure, not the 413.
    origin = "http://localhost:4100"
    app = create_app(settings.model_copy(update={"cors_origins": [origin]}))
    async with app.router.lifespan_context(app):
        user = await Factory(app).user()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            huge = {"title": "big", "content": "x" * 2_000_000}
            response = await client.post(
                "/posts/", headers={**user.headers, "Origin": origin}, json=huge
            )
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"
            assert response.headers["access-control-allow-origin"] == origin
            assert (await client.get("/posts/")).json()["items"] == []
