"""What every response tells a browser (fastpost.security_headers), what it tells nobody
(Server-Timing in production), who may read /metrics (fastpost.observability.metrics_access)
and which origins CORS lets in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from fastpost.app import create_app
from fastpost.security_headers import API_POLICY, script_hashes
from fastpost.settings import SecuritySettings, Settings

OUTSIDER = ("203.0.113.9", 40000)
METRICS_TOKEN = "scrape-token-0123456789abcdef0123456789"


@asynccontextmanager
async def _client(
    settings: Settings, client: tuple[str, int] = ("127.0.0.1", 40000), **changes: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def _policy(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(d.strip().partition(" ")[::2] for d in policy.split(";"))  # type: ignore[misc]


async def _every_kind_of_response(client: httpx.AsyncClient) -> list[httpx.Response]:
    return [
        await client.get("/health"),
        await client.get("/posts/"),
        await client.get("/no/such/path"),
        await client.post("/posts/", json={}),  # 401
        await client.get("/posts/0"),  # 422
        await client.post("/posts/", content=b"x", headers={"content-length": "99999999"}),
        await client.patch("/posts/popular"),  # 405
        await client.get("/openapi.json"),
        await client.get("/api/articles"),
        await client.get("/docs"),
        await client.get("/redoc"),
        await client.get("/docs/oauth2-redirect"),
    ]


async def test_every_response_carries_nosniff_a_referrer_policy_and_a_csp(
    client: httpx.AsyncClient,
) -> None:
    for response in await _every_kind_of_response(client):
        where = (response.request.method, response.request.url.path, response.status_code)
        assert response.headers["x-content-type-options"] == "nosniff", where
        assert response.headers["referrer-policy"] == "no-referrer", where
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], where
        # Only production says "HTTPS only, for a year": a browser would remember it for
        # localhost too.
        assert "strict-transport-security" not in response.headers, where


async def test_the_api_answers_with_a_policy_that_allows_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/posts/")
    assert response.headers["content-security-policy"] == API_POLICY


@pytest.mark.parametrize("page", ["/docs", "/docs/oauth2-redirect", "/redoc"])
async def test_documentation_pages_may_run_their_own_scripts_and_nothing_else(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    policy = _policy(response)
    assert policy["default-src"] == "'none'"
    sources = policy["script-src"].split()
    assert "'unsafe-inline'" not in sources
    assert "'unsafe-eval'" not in sources
    assert "'self'" in sources
    # Each inline script the page holds, as served, is allowed by its hash; nothing else.
    inline = script_hashes(response.content)
    assert sorted(s for s in sources if s.startswith("'sha256-")) == sorted(inline)
    assert not [s for s in policy.values() if re.search(r"https?:|\*", s)], policy


async def test_production_adds_hsts_and_drops_server_timing(settings: Settings) -> None:
    async with _client(settings, env="production") as client:
        for response in await _every_kind_of_response(client):
            where = (response.request.url.path, response.status_code)
            assert response.headers["strict-transport-security"].startswith("max-age="), where
            assert "server-timing" not in response.headers, where
            assert response.headers["x-request-id"], where


async def test_server_timing_is_sent_outside_production_or_where_configured(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert "db;dur=" in (await client.get("/posts/")).headers["server-timing"]
    observability = settings.observability.model_copy(update={"server_timing": True})
    async with _client(settings, env="production", observability=observability) as production:
        assert "db;dur=" in (await production.get("/posts/")).headers["server-timing"]


async def test_cors_answers_configured_origins_only(settings: Settings) -> None:
    async with _client(settings, cors_origins=["https://app.example"]) as client:
        for origin, allowed in (("https://app.example", True), ("https://evil.example", False)):
            preflight = await client.options(
                "/posts/",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            read = await client.get("/posts/", headers={"Origin": origin})
            if allowed:
                assert preflight.status_code == 200
                assert preflight.headers["access-control-allow-origin"] == origin
                assert read.headers["access-control-allow-origin"] == origin
            else:
                assert preflight.status_code == 400
                assert "access-control-allow-origin" not in preflight.headers
                assert "access-control-allow-origin" not in read.headers
    # No origins configured: no CORS headers for anyone.
    async with _client(settings) as client:
        read = await client.get("/posts/", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in read.headers


async def test_metrics_answer_anyone_outside_production(settings: Settings) -> None:
    async with _client(settings, client=OUTSIDER) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_in_production_metrics_answer_configured_addresses_or_the_token_only(
    settings: Settings,
) -> None:
    security = SecuritySettings(metrics_allow=["10.0.0.0/8"], metrics_token=METRICS_TOKEN)
    async with _client(settings, client=OUTSIDER, env="production", security=security) as client:
        refused = await client.get("/metrics")
        # As if there were no such path: nothing tells an outsider where metrics live.
        assert refused.status_code == 404
        assert refused.json() == (await client.get("/no/such/path")).json()
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 404
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert right.status_code == 200
        assert "http_requests_total" in right.text
    async with _client(
        settings, client=("10.1.2.3", 5000), env="production", security=security
    ) as client:
        assert (await client.get("/metrics")).status_code == 200
    # The default: this host only (a Prometheus beside it, or nginx's forwarded address).
    async with _client(settings, client=("127.0.0.1", 5000), env="production") as client:
        assert (await client.get("/metrics")).status_code == 200
    async with _client(settings, client=OUTSIDER, env="production") as client:
        assert (await client.get("/metrics")).status_code == 404
