"""Logged-in reads use the cache: the shared part of a first page or of a post comes from
the entry anonymous callers are served, and only the caller's flags (liked_by_me, with a
fresh likes_count) are read, by one statement for the page's ids, warm or cold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fastpost.db import Database
from fastpost.posts.models import Like, Post, PostTag, Tag
from tests.conftest import Factory, TestUser, select_count

PAGE_SIZES = (1, 20, 100)
POSTS = 101  # a full page of the largest size, and one more
T0 = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


@pytest.fixture
async def author(factory: Factory) -> TestUser:
    return await factory.user("author")


@pytest.fixture
async def reader(factory: Factory, db: Database, author: TestUser) -> TestUser:
    """A reader who liked every third of POSTS posts by one author, all tagged "bench"."""
    reader = await factory.user("reader")
    async with db.transaction() as session:
        posts = [
            Post(
                author_id=author.id,
                title=f"Post {i}",
                content="Words.",
                status="published",
                created_at=T0 + timedelta(seconds=i),
                updated_at=T0 + timedelta(seconds=i),
            )
            for i in range(POSTS)
        ]
        session.add_all(posts)
        tag = Tag(name="bench")
        session.add(tag)
        await session.flush()
        for post in posts:
            session.add(PostTag(post_id=post.id, tag_id=tag.id, created_at=post.created_at))
        for post in posts[::3]:
            session.add(Like(user_id=reader.id, post_id=post.id, created_at=T0))
            post.likes_count = 1
    return reader


async def get(
    client: httpx.AsyncClient, statements: list[str], url: str, headers: dict[str, str]
) -> tuple[list[str], httpx.Response]:
    statements.clear()
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return list(statements), response


def liked_ids(items: list[dict[str, object]]) -> set[object]:
    return {item["id"] for item in items if item["liked_by_me"]}


@pytest.mark.parametrize("size", PAGE_SIZES)
@pytest.mark.parametrize("path", ["/posts/", "/posts/?tag=bench", "/users/{author}/posts"])
async def test_a_logged_in_first_page_is_one_statement_warm_or_cold_for_any_page_size(
    client: httpx.AsyncClient,
    author: TestUser,
    reader: TestUser,
    statements: list[str],
    path: str,
    size: int,
) -> None:
    url = path.format(author=author.id) + ("&" if "?" in path else "?") + f"limit={size}"
    cold, first = await get(client, statements, url, reader.headers)
    warm, again = await get(client, statements, url, reader.headers)
    _, anonymous = await get(client, statements, url, {})

    assert select_count(cold) == len(cold) == 1, cold
    assert select_count(warm) == len(warm) == 1, warm
    # The flags for the page's ids as one list parameter, not the page again.
    assert "ANY (" in warm[0] or "json_each" in warm[0], warm
    assert again.json() == first.json()
    assert again.headers["cache-control"] == "private, no-store"
    items = again.json()["items"]
    assert len(items) == size
    # Newest first: the i-th item is post number POSTS - 1 - i, liked when that is a multiple of 3.
    assert [item["liked_by_me"] for item in items] == [
        (POSTS - 1 - i) % 3 == 0 for i in range(size)
    ]
    assert all(item["likes_count"] == int(bool(item["liked_by_me"])) for item in items)
    # The shared part is the anonymous page itself.
    shared = [{**item, "liked_by_me": None} for item in items]
    assert anonymous.json() == {"items": shared, "next_cursor": again.json()["next_cursor"]}


async def test_a_logged_in_post_is_one_statement_warm_or_cold(
    client: httpx.AsyncClient, reader: TestUser, statements: list[str]
) -> None:
    _, page = await get(client, statements, "/posts/?limit=2", {})
    post_id = page.json()["items"][1]["id"]  # post number POSTS - 2, which reader liked
    cold, first = await get(client, statements, f"/posts/{post_id}", reader.headers)
    warm, again = await get(client, statements, f"/posts/{post_id}", reader.headers)
    _, anonymous = await get(client, statements, f"/posts/{post_id}", {})

    assert len(cold) == len(warm) == 1, (cold, warm)
    assert again.json() == first.json() == {**anonymous.json(), "liked_by_me": True}
    assert "etag" not in again.headers


async def test_a_like_shows_at_once_in_the_callers_next_read_liked_and_counted(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.user(), await factory.user()
    post_id = await factory.post(author)
    for url in ("/posts/", f"/posts/{post_id}"):  # both cached, warm
        assert (await client.get(url, headers=reader.headers)).status_code == 200

    liked = await client.post(f"/posts/{post_id}/like", headers=reader.headers)
    page = (await client.get("/posts/", headers=reader.headers)).json()["items"][0]
    post = (await client.get(f"/posts/{post_id}", headers=reader.headers)).json()
    unliked = await client.delete(f"/posts/{post_id}/like", headers=reader.headers)
    page_after = (await client.get("/posts/", headers=reader.headers)).json()["items"][0]
    post_after = (await client.get(f"/posts/{post_id}", headers=reader.headers)).json()

    assert liked.status_code == unliked.status_code == 200
    assert (page["liked_by_me"], page["likes_count"]) == (True, 1)
    assert (post["liked_by_me"], post["likes_count"]) == (True, 1)
    assert (page_after["liked_by_me"], page_after["likes_count"]) == (False, 0)
    assert (post_after["liked_by_me"], post_after["likes_count"]) == (False, 0)


async def test_a_draft_is_shown_to_its_author_only_and_never_shared(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.user(), await factory.user()
    draft_id = await factory.post(author, status="draft")

    mine = await client.get(f"/posts/{draft_id}", headers=author.headers)
    theirs = await client.get(f"/posts/{draft_id}", headers=other.headers)
    anonymous = await client.get(f"/posts/{draft_id}")

    assert mine.status_code == 200
    assert mine.json()["status"] == "draft"
    assert theirs.status_code == anonymous.status_code == 404


async def test_a_post_deleted_behind_the_caches_back_leaves_the_logged_in_page(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    # The flags statement reads the posts table: what a stale shared page still lists is
    # left out for a logged-in caller (and its own post is a 404).
    author, reader = await factory.user(), await factory.user()
    kept, gone = await factory.post(author), await factory.post(author)
    assert len((await client.get("/posts/", headers=reader.headers)).json()["items"]) == 2
    assert (await client.get(f"/posts/{gone}", headers=reader.headers)).status_code == 200
    async with db.transaction() as session:
        await session.delete(await session.get(Post, gone))  # no invalidation

    page = (await client.get("/posts/", headers=reader.headers)).json()["items"]
    post = await client.get(f"/posts/{gone}", headers=reader.headers)

    assert [item["id"] for item in page] == [kept]
    assert post.status_code == 404
