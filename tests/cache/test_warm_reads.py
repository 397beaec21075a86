"""The warm-read middleware (fastpost.http_caching.CachedPostReads) answers a hit before
routing exactly as the route answers the same read: the same status, headers and body,
200 and 304, because both take the entry's key from fastpost.cache_keys and its headers
from http_caching.entry_headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from fastpost import cache_keys, http_caching
from fastpost.app import create_app
from fastpost.cache import Cache, Entry
from fastpost.http_caching import CachedPostReads
from fastpost.observability.statements import record_statements
from fastpost.settings import CacheSettings, Settings
from tests.conftest import Factory, TestUser

# Set per request by the outer layers, whoever answers: not part of the comparison.
PER_REQUEST = {"x-request-id", "server-timing", "date"}


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.multi_items() if k not in PER_REQUEST)


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, _headers(response), response.content


async def _reads(client: httpx.AsyncClient, author: TestUser, factory: Factory) -> list[str]:
    """The paths the middleware serves, and the keys of their entries."""
    post_id = await factory.post(author)
    article = await client.post(
        "/api/articles",
        json={"article": {"title": "T", "description": "D", "body": "B", "tagList": ["t"]}},
        headers={"Authorization": author.headers["Authorization"].replace("Bearer", "Token")},
    )
    slug = article.json()["article"]["slug"]
    return [f"/posts/{post_id}", f"/api/articles/{slug}", "/api/tags"]


def _key(path: str) -> str:
    """The key the route's service caches the path's entry under."""
    if path.startswith("/posts/"):
        return cache_keys.post(int(path.rsplit("/", 1)[1]))
    if path == "/api/tags":
        return cache_keys.realworld_tags()
    return cache_keys.article(path.rsplit("/", 1)[1])


async def _compare(app: FastAPI, client: httpx.AsyncClient, paths: list[str]) -> None:
    cache: Cache = app.state.cache
    for path in paths:
        key = _key(path)
        cache.local.drop(key)
        # A miss: the route loads the entry (the middleware found nothing to serve).
        with record_statements() as loaded:
            routed = await client.get(path)
        assert loaded, path
        assert cache.peek(key) is not None, path
        # A hit: answered before routing, from the entry the route just cached.
        with record_statements() as none:
            served = await client.get(path)
        assert none == [], path
        assert _answer(served) == _answer(routed), path
        assert routed.status_code == 200

        condition = {"If-None-Match": routed.headers["etag"]}
        cache.local.drop(key)
        routed_304 = await client.get(path, headers=condition)
        served_304 = await client.get(path, headers=condition)
        assert routed_304.status_code == 304
        assert _answer(served_304) == _answer(routed_304), path


async def test_a_middleware_hit_and_a_route_miss_answer_alike(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    await _compare(app, client, await _reads(client, author, factory))


@pytest.fixture
async def shared_max_age_app(settings: Settings, tmp_path: Path) -> AsyncIterator[FastAPI]:
    shared = settings.model_copy(update={"cache": CacheSettings(shared_max_age_seconds=30)})
    application = create_app(shared)
    async with application.router.lifespan_context(application):
        yield application


async def test_they_answer_alike_when_shared_caches_may_keep_responses(
    shared_max_age_app: FastAPI,
) -> None:
    transport = httpx.ASGITransport(app=shared_max_age_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        factory = Factory(shared_max_age_app)
        author = await factory.user()
        paths = await _reads(client, author, factory)
        await _compare(shared_max_age_app, client, paths)
        response = await client.get(paths[0])
        assert "s-maxage=30" in response.headers["cache-control"]


async def test_a_hit_carries_the_validators_of_the_entry_it_serves_now(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    path = (await _reads(client, author, factory))[0]
    key = _key(path)
    cache: Cache = app.state.cache
    await client.get(path)  # the route caches the entry; the next read is a hit
    first = await client.get(path)
    # Another entry under the same key (as after a write and a reload): the headers the
    # middleware keeps with the first entry are not the second's.
    changed = Entry.of(b'{"changed":true}', last_modified="Sat, 05 Dec 2026 00:00:00 GMT")
    cache.local.put(key, changed, ttl=60, tags=())
    second = await client.get(path)
    assert second.content == changed.body
    assert second.headers["etag"] == changed.etag != first.headers["etag"]
    assert second.headers["last-modified"] == changed.last_modified
    assert second.headers["content-length"] == str(len(changed.body))
    revalidated = await client.get(path, headers={"If-None-Match": changed.etag})
    assert revalidated.status_code == 304
    assert revalidated.headers["etag"] == changed.etag


async def test_the_paths_the_middleware_remembers_are_bounded() -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    middleware = CachedPostReads(inner)
    for n in range(3 * http_caching.KNOWN_PATHS):
        scope = {"type": "http", "method": "GET", "path": f"/posts/{n}/comments", "headers": []}
        await middleware(scope, receive, send)
    assert 0 < len(middleware._known) <= http_caching.KNOWN_PATHS
