"""Error tracking: with FASTPOST_SENTRY_DSN, an unhandled error reaches a real HTTP endpoint
as a Sentry envelope with the request's id, route and user, and no credential."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.posts import service
from fastpost.settings import Settings
from tests.conftest import Factory

# In the query string and the body of the request that fails; none may reach Sentry.
QUERY_PASSWORD = "hunter2-in-the-query"
BODY_PASSWORD = "hunter2-in-the-body"
COOKIE = "session-cookie-value-0123"


class Envelopes:
    """A Sentry ingestion endpoint on 127.0.0.1: keeps each envelope's bytes, decompressed."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":  # the SDK compresses with brotli when it is installed
                    import brotli

                    body = brotli.decompress(body)
                received.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public@127.0.0.1:{self.server.server_port}/1"

    def events(self) -> list[dict[str, Any]]:
        """The event items of every envelope: a header line, then item header and payload."""
        events = []
        for envelope in self.received:
            lines = envelope.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    events.append(json.loads(payload))
        return events


@pytest.fixture
def envelopes() -> Iterator[Envelopes]:
    endpoint = Envelopes()
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()
    thread.join()


@pytest.fixture
async def reporting_app(settings: Settings, envelopes: Envelopes) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"sentry_dsn": envelopes.dsn}))
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_unhandled_error_is_sent_with_request_id_route_and_user_and_no_credential(
    reporting_app: FastAPI, envelopes: Envelopes, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await Factory(reporting_app).user()
    jwt = user.headers["Authorization"].removeprefix("Bearer ")

    async def explode(**_: object) -> None:
        # An error whose message quotes a credential, as a driver's error may.
        raise RuntimeError(f"could not store the post; token={jwt}")

    monkeypatch.setattr(service, "create_post", explode)
    async with _client(reporting_app) as client:
        response = await client.post(
            f"/posts/?token={jwt}&password={QUERY_PASSWORD}",
            headers={**user.headers, "Cookie": f"session={COOKIE}"},
            json={"title": "a post", "content": f"password: {BODY_PASSWORD}"},
        )
    assert response.status_code == 500
    reporting_app.state.error_reporter.flush()

    [event] = envelopes.events()
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "could not store the post; [redacted]"
    assert event["tags"]["request_id"] == response.headers["x-request-id"]
    assert event["tags"]["route"] == "/posts/"
    assert event["tags"]["method"] == "POST"
    assert event["transaction"] == "POST /posts/"
    assert event["user"] == {"id": str(user.id)}
    assert event["environment"] == "test"
    raw = b"".join(envelopes.received)
    # The Authorization header's value is "Bearer " and the JWT. (The word itself is in
    # this file's source lines, which the stack carries.)
    for secret in (jwt, QUERY_PASSWORD, BODY_PASSWORD, COOKIE):
        assert secret.encode() not in raw, secret
    assert "request" not in event  # no headers, cookies, query string or body at all
    # The SDK's own default: no client address, no cookies, no headers of its own accord.
    assert reporting_app.state.error_reporter.client.should_send_default_pii() is False


async def test_only_unhandled_errors_are_sent(reporting_app: FastAPI, envelopes: Envelopes) -> None:
    async with _client(reporting_app) as client:
        assert (await client.get("/posts/999999")).status_code == 404
        assert (await client.post("/posts/", json={})).status_code == 401
    reporting_app.state.error_reporter.flush()
    assert envelopes.received == []


async def test_the_client_wraps_no_request(reporting_app: FastAPI) -> None:
    # No integration: nothing patched into Starlette, FastAPI or logging, so the requests
    # that end well cost what they cost without Sentry.
    assert reporting_app.state.error_reporter.client.integrations == {}
    assert sentry_sdk.get_client().is_active() is False


async def test_without_a_dsn_sentry_is_not_initialised(
    settings: Settings, envelopes: Envelopes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(**_: object) -> None:
        raise RuntimeError("nobody hears this")

    monkeypatch.setattr(service, "list_popular_posts", explode)
    assert settings.sentry_dsn is None
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/posts/popular")).status_code == 500
    assert app.state.error_reporter is None
    assert sentry_sdk.get_client().is_active() is False
    assert envelopes.received == []
