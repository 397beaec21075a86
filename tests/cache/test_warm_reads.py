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

from fastpost import cache_keys
from fastpost.app import create_app
from fastpost.cache import Cache
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
