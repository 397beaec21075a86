"""Load shedding (fastpost.overload): past the bound on requests in flight, 503 at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.errors import ServiceUnavailable
from fastpost.overload import ShedOverload
from fastpost.settings import Settings
from tests.conftest import PASSWORD, Factory
from tests.helpers import GatedPasswords, wait_until, with_auth

BOUND = 2


@pytest.fixture
async def bounded(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with room for BOUND requests at once, and logins that wait at a gate."""
    api = settings.api.model_copy(update={"max_requests_in_flight": BOUND})
    settings = with_auth(settings.model_copy(update={"api": api}), password_hash_concurrency=BOUND)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.passwords = GatedPasswords(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def test_requests_past_the_bound_get_503_with_retry_after_and_probes_still_answer(
    bounded: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = bounded
    factory = Factory(app)
    user = await factory.user("olivia")
    post_id = await factory.post(user)
    assert (await client.get(f"/posts/{post_id}")).status_code == 200  # now in the cache
    passwords: GatedPasswords = app.state.passwords
    body = {"username": "olivia", "password": PASSWORD}
    logins = [asyncio.create_task(client.post("/auth/login", json=body)) for _ in range(BOUND)]
    try:
        await wait_until(lambda: passwords.running == BOUND)  # the worker is full

        native = await client.get("/posts/")
        realworld = await client.get("/api/articles")
        post = {"title": "t", "content": "c"}
        write = await client.post("/posts/", json=post, headers=user.headers)
        probes = [await client.get(path) for path in ("/health", "/health/ready", "/metrics")]
        cached = await client.get(f"/posts/{post_id}")
    finally:
        passwords.gate.set()
        answered = await asyncio.gather(*logins)

    for shed in (native, realworld, write):
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
    assert native.json() == {
        "detail": "The server is busy, try again shortly",
        "code": "overloaded",
    }
    assert realworld.json() == {"errors": {"request": ["The server is busy, try again shortly"]}}
    assert [p.status_code for p in probes] == [200, 200, 200]
    assert cached.status_code == 200  # a cache hit waits on nothing: never shed
    assert [r.status_code for r in answered] == [200] * BOUND
    # The requests in flight have finished: there is room again.
    assert (await client.get("/posts/")).status_code == 200


async def test_a_request_that_finishes_or_fails_gives_its_room_back(
    bounded: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = bounded
    for _ in range(3 * BOUND):
        assert (await client.get("/posts/999999")).status_code == 404
        assert (await client.post("/posts/", json={})).status_code == 401
    layers = [app.middleware_stack]
    while not isinstance(layers[-1], ShedOverload):
        layers.append(layers[-1].app)  # type: ignore[attr-defined]
    assert layers[-1].in_flight == 0


async def test_a_503_raised_by_a_layer_within_is_answered_not_turned_into_a_500() -> None:
    """The idempotency store's database calls run in a middleware, outside the app's
    exception handlers: their DatabaseUnavailable reaches this layer."""

    async def unavailable_layer(scope: object, receive: object, send: object) -> None:
        raise ServiceUnavailable("The database is unavailable, try again shortly", retry_after=2)

    shed = ShedOverload(unavailable_layer, max_in_flight=10, realworld_prefix="/api")
    transport = httpx.ASGITransport(app=shed)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        native = await client.post("/posts/")
        realworld = await client.post("/api/articles")
    assert (native.status_code, native.headers["retry-after"]) == (503, "2")
    assert native.json() == {
        "detail": "The database is unavailable, try again shortly",
        "code": "unavailable",
    }
    assert realworld.json() == {
        "errors": {"request": ["The database is unavailable, try again shortly"]}
    }
    assert shed.in_flight == 0


def test_no_layer_when_the_bound_is_off(settings: Settings) -> None:
    api = settings.api.model_copy(update={"max_requests_in_flight": 0})
    app = create_app(settings.model_copy(update={"api": api}))
    assert all(m.cls is not ShedOverload for m in app.user_middleware)
