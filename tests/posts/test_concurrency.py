"""Likes under concurrency: no lost updates, no double counts, likes_count always equal to
the number of like rows."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from fastpost.posts.models import Like, Post
from tests.conftest import Factory
from tests.helpers import database_of


async def likes_in_database(app: FastAPI, post_id: int) -> tuple[int, int]:
    """(likes_count on the post, rows in the likes table) for one post."""
    async with database_of(app, post_id).reader() as conn:
        count = await conn.scalar(select(Post.likes_count).where(Post.id == post_id))
        rows = await conn.scalar(
            select(func.count()).select_from(Like).where(Like.post_id == post_id)
        )
    return int(count or 0), int(rows or 0)


async def test_200_users_liking_one_post_at_once_are_all_counted(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    fans = await factory.users(200)

    responses = await asyncio.gather(
        *(client.post(f"/posts/{post_id}/like", headers=fan.headers) for fan in fans)
    )

    assert [r.status_code for r in responses] == [200] * 200
    # Each like saw its own increment land: the counts handed back are exactly 1..200, so no
    # two requests read the same old value and wrote the same new one.
    assert sorted(r.json()["likes_count"] for r in responses) == list(range(1, 201))
    assert (await client.get(f"/posts/{post_id}")).json()["likes_count"] == 200
    assert await likes_in_database(app, post_id) == (200, 200)


async def test_one_user_liking_one_post_20_times_at_once_counts_once(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author, fan = await factory.users(2)
    post_id = await factory.post(author)

    responses = await asyncio.gather(
        *(client.post(f"/posts/{post_id}/like", headers=fan.headers) for _ in range(20))
    )

    assert [r.status_code for r in responses] == [200] * 20
    assert {(r.json()["liked"], r.json()["likes_count"]) for r in responses} == {(True, 1)}
    assert await likes_in_database(app, post_id) == (1, 1)


async def test_200_users_unliking_at_once_bring_the_count_back_to_zero(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    fans = await factory.users(200)
    for fan in fans:
        await client.post(f"/posts/{post_id}/like", headers=fan.headers)

    responses = await asyncio.gather(
        *(client.delete(f"/posts/{post_id}/like", headers=fan.headers) for fan in fans)
    )

    assert [r.status_code for r in responses] == [200] * 200
    assert sorted(r.json()["likes_count"] for r in responses) == list(range(200))
    assert await likes_in_database(app, post_id) == (0, 0)


async def test_interleaved_likes_and_unlikes_keep_the_count_equal_to_the_like_rows(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    fans = await factory.users(20)
    url = f"/posts/{post_id}/like"

    requests = [
        client.request(method, url, headers=fan.headers)
        for _ in range(3)
        for fan in fans
        for method in ("POST", "DELETE")
    ]
    responses = await asyncio.gather(*requests)

    assert {r.status_code for r in responses} == {200}
    count, rows = await likes_in_database(app, post_id)
    assert count == rows
    assert 0 <= count <= 20
