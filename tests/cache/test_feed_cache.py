"""The first page of a logged-in caller's feed comes from the cache, per reader and limit:
its posts as anonymous callers see them, completed per request with the reader's flags
(liked_by_me, with a fresh likes_count) by one statement for the page's ids. Every write
that changes what the page shows drops the entry: the reader's follows and unfollows, and a
followed author's posts and profile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from fastpost.app import create_app
from fastpost.settings import Settings
from tests.conftest import Factory, TestUser, select_count


async def read_feed(
    client: httpx.AsyncClient,
    reader: TestUser,
    statements: list[str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    if statements is not None:
        statements.clear()
    response = await client.get("/feed", params=params, headers=reader.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


@pytest.fixture
async def people(factory: Factory) -> tuple[TestUser, TestUser, TestUser]:
    """A reader following two authors."""
    reader, author, other = await factory.users(3)
    await factory.follow(reader, author)
    await factory.follow(reader, other)
    return reader, author, other


@pytest.mark.parametrize("size", [1, 2, 20])
async def test_a_warm_first_page_of_the_feed_sends_only_the_viewer_flags_statement(
    client: httpx.AsyncClient,
    factory: Factory,
    people: tuple[TestUser, TestUser, TestUser],
    statements: list[str],
    size: int,
) -> None:
    reader, author, other = people
    for author_ in (author, other, author):
        await factory.post(author_)
    cold = await read_feed(client, reader, statements, limit=size)
    cold_statements = list(statements)
    warm = await read_feed(client, reader, statements, limit=size)

    # Cold: the page with the reader's flags and whom they follow (the entry's tags).
    assert select_count(cold_statements) == len(cold_statements) == 1, cold_statements
    assert select_count(statements) == len(statements) == 1, statements
    assert "ANY (" in statements[0] or "json_each" in statements[0], statements
    assert warm == cold
    assert len(warm["items"]) == min(size, 3)
    assert all(item["liked_by_me"] is False for item in warm["items"])


async def test_the_feed_answer_is_private(
    client: httpx.AsyncClient, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, _, _ = people
    for _ in range(2):
        response = await client.get("/feed", headers=reader.headers)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private, no-store"


async def test_a_new_post_by_a_followed_author_shows_first_in_the_next_read(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, other = people
    older = await factory.post(author)
    assert ids(await read_feed(client, reader)) == [older]

    # By an author the page does not show yet: their tag is on the entry all the same.
    response = await client.post(
        "/posts/", json={"title": "New", "content": "Words."}, headers=other.headers
    )
    assert response.status_code == 201, response.text

    assert ids(await read_feed(client, reader)) == [response.json()["id"], older]


async def test_following_and_unfollowing_change_the_next_read(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, _ = people
    newcomer = await factory.user()
    theirs = await factory.post(newcomer)
    mine = await factory.post(author)
    assert ids(await read_feed(client, reader)) == [mine]

    followed = await client.post(f"/users/{newcomer.id}/follow", headers=reader.headers)
    assert followed.status_code == 200
    assert ids(await read_feed(client, reader)) == [mine, theirs]

    dropped = await client.delete(f"/users/{author.id}/follow", headers=reader.headers)
    assert dropped.status_code == 200
    assert ids(await read_feed(client, reader)) == [theirs]


async def test_a_like_by_the_reader_shows_at_once_liked_and_counted(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, _ = people
    post_id = await factory.post(author)
    await read_feed(client, reader)

    assert (await client.post(f"/posts/{post_id}/like", headers=reader.headers)).status_code == 200
    (liked,) = (await read_feed(client, reader))["items"]
    assert (liked["liked_by_me"], liked["likes_count"]) == (True, 1)

    assert (
        await client.delete(f"/posts/{post_id}/like", headers=reader.headers)
    ).status_code == 200
    (unliked,) = (await read_feed(client, reader))["items"]
    assert (unliked["liked_by_me"], unliked["likes_count"]) == (False, 0)


async def test_an_edit_an_unpublish_and_a_delete_by_a_followed_author_show_in_the_next_read(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, _ = people
    kept, hidden, gone = [await factory.post(author) for _ in range(3)]
    await read_feed(client, reader)

    edited = await client.patch(
        f"/posts/{kept}", json={"title": "Edited", "tags": ["fresh"]}, headers=author.headers
    )
    assert edited.status_code == 200, edited.text
    page = await read_feed(client, reader)
    assert [(item["title"], item["tags"]) for item in page["items"] if item["id"] == kept] == [
        ("Edited", ["fresh"])
    ]
    assert page["items"][-1]["updated_at"] == edited.json()["updated_at"]

    unpublished = await client.patch(
        f"/posts/{hidden}", json={"status": "draft"}, headers=author.headers
    )
    assert unpublished.status_code == 200, unpublished.text
    assert ids(await read_feed(client, reader)) == [gone, kept]

    assert (await client.delete(f"/posts/{gone}", headers=author.headers)).status_code == 204
    assert ids(await read_feed(client, reader)) == [kept]


async def test_a_followed_authors_profile_edit_shows_in_the_next_read(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, _ = people
    await factory.post(author)
    await read_feed(client, reader)

    changed = await client.patch(
        "/users/me",
        json={"username": "renamed", "image": "https://example.com/me.png"},
        headers=author.headers,
    )
    assert changed.status_code == 200, changed.text

    (item,) = (await read_feed(client, reader))["items"]
    assert item["author"] == {
        "id": author.id,
        "username": "renamed",
        "image": "https://example.com/me.png",
    }


async def test_each_limit_is_its_own_entry_and_a_cursor_page_is_read_every_time(
    client: httpx.AsyncClient,
    factory: Factory,
    people: tuple[TestUser, TestUser, TestUser],
    statements: list[str],
) -> None:
    reader, author, _ = people
    for _ in range(3):
        await factory.post(author)
    one = await read_feed(client, reader, limit=1)
    two = await read_feed(client, reader, limit=2)
    assert len(one["items"]) == 1
    assert len(two["items"]) == 2
    assert ids(two)[:1] == ids(one)

    cursor = one["next_cursor"]
    first = await read_feed(client, reader, statements, limit=1, cursor=cursor)
    again = await read_feed(client, reader, statements, limit=1, cursor=cursor)
    # The feed statement itself, not the flags for cached ids.
    assert len(statements) == 1, statements
    assert "follows" in statements[0], statements
    assert ids(first) == ids(again) == ids(two)[1:]
    by_offset = await read_feed(client, reader, statements, limit=1, offset=1)
    assert len(statements) == 1, statements
    assert "follows" in statements[0], statements
    assert ids(by_offset) == ids(two)[1:]


async def test_two_readers_do_not_see_each_others_feed(
    client: httpx.AsyncClient, factory: Factory, people: tuple[TestUser, TestUser, TestUser]
) -> None:
    reader, author, other = people
    second = await factory.user()
    await factory.follow(second, other)
    by_author, by_other = await factory.post(author), await factory.post(other)
    assert (await client.post(f"/posts/{by_other}/like", headers=second.headers)).status_code == 200

    mine = await read_feed(client, reader)
    theirs = await read_feed(client, second)
    assert ids(mine) == [by_other, by_author]
    assert ids(theirs) == [by_other]
    assert [item["liked_by_me"] for item in mine["items"]] == [False, False]
    assert [item["liked_by_me"] for item in theirs["items"]] == [True]
    # And again, warm.
    assert await read_feed(client, reader) == mine
    assert await read_feed(client, second) == theirs


async def test_an_empty_feed_is_cached_and_a_followed_authors_first_post_shows_in_it(
    client: httpx.AsyncClient,
    factory: Factory,
    people: tuple[TestUser, TestUser, TestUser],
    statements: list[str],
) -> None:
    reader, author, _ = people
    # No row to carry the followees: the cold read asks for them apart.
    assert ids(await read_feed(client, reader, statements)) == []
    assert len(statements) == 2, statements
    assert ids(await read_feed(client, reader, statements)) == []
    assert statements == [], statements  # no ids, nothing to flag

    response = await client.post(
        "/posts/", json={"title": "First", "content": "Words."}, headers=author.headers
    )
    assert response.status_code == 201, response.text
    assert ids(await read_feed(client, reader)) == [response.json()["id"]]


@pytest.fixture
async def two_workers(
    settings: Settings, redis_url: str
) -> AsyncIterator[tuple[Factory, httpx.AsyncClient, httpx.AsyncClient]]:
    """Two app instances (two workers) sharing one database and one Redis, and a factory."""
    shared = settings.model_copy(update={"redis_url": redis_url})
    async with AsyncExitStack() as stack:
        apps, clients = [], []
        for _ in range(2):
            app = create_app(shared)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            apps.append(app)
            clients.append(await stack.enter_async_context(client))
        yield Factory(apps[0]), clients[0], clients[1]


async def test_writes_through_one_worker_drop_the_feed_another_cached_in_redis(
    two_workers: tuple[Factory, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    factory, a, b = two_workers
    reader, author, newcomer = await factory.users(3)
    await factory.follow(reader, author)
    theirs = await factory.post(newcomer)

    async def settles(client: httpx.AsyncClient, expected: list[int]) -> None:
        # Tier 1 of the other worker hears of the invalidation over pub/sub: soon, not at once.
        for _ in range(100):
            if ids(await read_feed(client, reader)) == expected:
                return
            await asyncio.sleep(0.05)
        assert ids(await read_feed(client, reader)) == expected

    assert ids(await read_feed(b, reader)) == []  # cached by b, in Redis too
    created = await a.post("/posts/", json={"title": "New", "content": "."}, headers=author.headers)
    assert created.status_code == 201, created.text
    mine = created.json()["id"]
    # a's tier 1 never held the entry: it reads Redis, where the write dropped it.
    assert ids(await read_feed(a, reader)) == [mine]
    await settles(b, [mine])

    followed = await b.post(f"/users/{newcomer.id}/follow", headers=reader.headers)
    assert followed.status_code == 200
    assert ids(await read_feed(b, reader)) == [mine, theirs]
    await settles(a, [mine, theirs])
