"""A logged-in read is served from the shared cache with the caller's flags read fresh: a
like made through one app instance shows in the caller's next read through another that
shares Redis and the database, whatever that one's tier 1 still holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.posts.models import Like, Post
from fastpost.settings import Settings
from fastpost.timeutil import utcnow
from tests.conftest import Factory


@dataclass
class Worker:
    app: FastAPI
    client: httpx.AsyncClient


@pytest.fixture
async def two_apps(settings: Settings, redis_url: str) -> AsyncIterator[list[Worker]]:
    """Two app instances (two workers) sharing one database and one Redis."""
    shared = settings.model_copy(update={"redis_url": redis_url})
    async with AsyncExitStack() as stack:
        workers = []
        for _ in range(2):
            app = create_app(shared)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://test")
            workers.append(Worker(app, await stack.enter_async_context(client)))
        yield workers


def _flags(item: dict[str, object]) -> tuple[object, object]:
    return item["liked_by_me"], item["likes_count"]


async def _reads(client: httpx.AsyncClient, post_id: int, headers: dict[str, str]) -> list[object]:
    page = await client.get("/posts/", headers=headers)
    post = await client.get(f"/posts/{post_id}", headers=headers)
    assert page.status_code == post.status_code == 200
    return [_flags(page.json()["items"][0]), _flags(post.json())]


async def test_a_like_through_one_app_shows_at_once_through_the_other(
    two_apps: list[Worker],
) -> None:
    a, b = (worker.client for worker in two_apps)
    factory = Factory(two_apps[0].app)
    author, reader = await factory.user(), await factory.user()
    post_id = await factory.post(author)
    assert await _reads(b, post_id, reader.headers) == [(False, 0)] * 2  # cached in b

    assert (await a.post(f"/posts/{post_id}/like", headers=reader.headers)).status_code == 200
    liked = await _reads(b, post_id, reader.headers)
    assert (await a.delete(f"/posts/{post_id}/like", headers=reader.headers)).status_code == 200
    unliked = await _reads(b, post_id, reader.headers)

    assert liked == [(True, 1)] * 2
    assert unliked == [(False, 0)] * 2


async def test_the_flags_are_fresh_even_when_the_shared_entry_is_stale(
    two_apps: list[Worker],
) -> None:
    # A like written behind the cache's back (no invalidation reaches either app): the
    # shared entries in b still say 0 likes, and the logged-in reads are right regardless.
    b = two_apps[1].client
    factory = Factory(two_apps[0].app)
    author, reader = await factory.user(), await factory.user()
    post_id = await factory.post(author)
    assert await _reads(b, post_id, reader.headers) == [(False, 0)] * 2
    db: Database = two_apps[0].app.state.db
    async with db.transaction() as session:
        session.add(Like(user_id=reader.id, post_id=post_id, created_at=utcnow()))
        await session.execute(update(Post).where(Post.id == post_id).values(likes_count=1))

    anonymous = (await b.get(f"/posts/{post_id}")).json()

    assert await _reads(b, post_id, reader.headers) == [(True, 1)] * 2
    assert await _reads(b, post_id, author.headers) == [(False, 1)] * 2
    assert _flags(anonymous) == (None, 0)  # the stale shared entry was still there
