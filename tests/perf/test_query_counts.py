"""How many SQL statements each read costs: the same for a page of 1 as for a page of 100.

A list that loads authors or "liked by me" per row (N+1) shows up here as a statement count
that grows with the page size. Every list is measured on a full page of each size, on a
first page and on a page reached by cursor, anonymously and logged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from fastpost.comments.models import Comment
from fastpost.db import Database
from fastpost.posts.models import Like, Post, PostTag, Tag
from fastpost.social.models import Follow
from fastpost.users.models import User
from tests.conftest import PASSWORD_HASH, Factory, TestUser, select_count

PAGE_SIZES = (1, 20, 100)
# More than two of the largest pages, so that every measured page (the first, and the one
# after it) is full and has a next one.
ROWS = 205
T0 = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


async def test_the_statement_log_records_each_statement_once(
    db: Database, statements: list[str]
) -> None:
    # Every count below rests on this: a statement sent once is recorded once, on the read
    # path and on the write path alike.
    async with db.reader() as conn:
        await conn.execute(text("SELECT 1"))
    async with db.transaction() as session:
        await session.execute(text("SELECT 2"))
    assert [s for s in statements if s.startswith("SELECT")] == ["SELECT 1", "SELECT 2"]


@dataclass
class World:
    hub: TestUser  # follows and is followed by ROWS users, and wrote ROWS posts
    others: list[int]  # their ids
    post_id: int  # one of hub's posts, liked by hub itself, with ROWS comments


@pytest.fixture
async def world(factory: Factory, db: Database) -> World:
    """ROWS friends of one user, each with a post, and ROWS posts by that user, in bulk."""
    hub = await factory.user("hub")
    async with db.transaction() as session:
        users = [
            User(
                username=f"member{i}",
                email=f"member{i}@example.com",
                password_hash=PASSWORD_HASH,
                created_at=T0,
                updated_at=T0,
            )
            for i in range(ROWS)
        ]
        session.add_all(users)
        await session.flush()
        others = [u.id for u in users]
        posts = []
        for i, author_id in enumerate([hub.id] * ROWS + others):
            stamp = T0 + timedelta(seconds=i)
            posts.append(
                Post(
                    author_id=author_id,
                    title=f"Benchmark notes {i}",
                    content="Searchable benchmark words.",
                    status="published",
                    likes_count=i % 7,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        session.add_all(posts)
        for i, other in enumerate(others):
            stamp = T0 + timedelta(seconds=i)
            session.add(Follow(follower_id=hub.id, followee_id=other, created_at=stamp))
            session.add(Follow(follower_id=other, followee_id=hub.id, created_at=stamp))
        await session.flush()
        # Some likes by the viewer, so that "liked_by_me" has both answers on every page.
        for post in posts[::3]:
            session.add(Like(user_id=hub.id, post_id=post.id, created_at=T0))
        # Every post is tagged "bench", and one of "even" and "odd": two tags per post.
        tags = {name: Tag(name=name) for name in ("bench", "even", "odd")}
        session.add_all(tags.values())
        await session.flush()
        for i, post in enumerate(posts):
            for tag in (tags["bench"], tags["odd" if i % 2 else "even"]):
                session.add(PostTag(post_id=post.id, tag_id=tag.id, created_at=post.created_at))
        liked = posts[0].id
        for i, other in enumerate(others):
            stamp = T0 + timedelta(seconds=i)
            session.add(
                Comment(post_id=liked, author_id=other, body=f"Comment {i}", created_at=stamp)
            )
    return World(hub=hub, others=others, post_id=liked)


async def measure(
    client: httpx.AsyncClient, statements: list[str], url: str, headers: dict[str, str]
) -> tuple[list[str], httpx.Response]:
    """The statements one GET sends, and its response."""
    statements.clear()
    response = await client.get(url, headers=headers)
    sent = list(statements)
    assert response.status_code == 200, (url, response.text)
    return sent, response


def items_of(response: httpx.Response) -> list[dict[str, object]]:
    body = response.json()
    items: list[dict[str, object]] = body["items"] if isinstance(body, dict) else body
    return items


def _with(url: str, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


# Each list and how it reaches its second page: by cursor, by offset, or not at all (popular
# is a single top-N list).
POST_LISTS = {
    "posts": ("/posts/", "cursor"),
    "tagged": ("/posts/?tag=bench", "cursor"),
    "user_posts": ("/users/{hub}/posts", "cursor"),
    "feed": ("/feed", "cursor"),
    "popular": ("/posts/popular", None),
    "search": ("/posts/search?q=benchmark", "offset"),
}


# The feed is the caller's own: there is no anonymous feed to measure (it answers 401).
POST_LIST_CASES = [
    (endpoint, viewer)
    for endpoint in POST_LISTS
    for viewer in ("anonymous", "logged_in")
    if (endpoint, viewer) != ("feed", "anonymous")
]


@pytest.mark.parametrize(("endpoint", "viewer"), POST_LIST_CASES)
async def test_post_lists_run_one_select_for_any_page_size(
    client: httpx.AsyncClient,
    world: World,
    statements: list[str],
    endpoint: str,
    viewer: str,
) -> None:
    path, next_page = POST_LISTS[endpoint]
    url = path.format(hub=world.hub.id)
    headers = world.hub.headers if viewer == "logged_in" else {}
    counts: dict[str, int] = {}
    for size in PAGE_SIZES:
        sent, response = await measure(client, statements, _with(url, limit=size), headers)
        items = items_of(response)
        assert len(items) == size
        flags = {item["liked_by_me"] for item in items}
        if viewer == "anonymous":
            assert flags == {None}
        else:
            assert flags <= {True, False}
            if size > 1:
                assert flags == {True, False}
        # Each post's tags come in the same statement.
        assert {tuple(item["tags"]) for item in items} <= {("bench", "even"), ("bench", "odd")}
        counts[f"limit={size}"] = len(sent)
        assert select_count(sent) == 1, sent
        if next_page is not None:
            after = response.json()["next_cursor"] if next_page == "cursor" else size
            assert after is not None
            sent, response = await measure(
                client, statements, _with(url, limit=size, **{next_page: after}), headers
            )
            second = items_of(response)
            assert len(second) == size
            assert not {item["id"] for item in second} & {item["id"] for item in items}
            counts[f"limit={size}&{next_page}"] = len(sent)
    assert set(counts.values()) == {1}, counts


@pytest.mark.parametrize("relation", ["followers", "following", "friends"])
@pytest.mark.parametrize("viewer", ["anonymous", "logged_in"])
async def test_user_lists_run_one_select_for_any_page_size(
    client: httpx.AsyncClient,
    world: World,
    statements: list[str],
    relation: str,
    viewer: str,
) -> None:
    url = f"/users/{world.hub.id}/{relation}"
    headers = world.hub.headers if viewer == "logged_in" else {}
    counts: dict[str, int] = {}
    for size in PAGE_SIZES:
        sent, response = await measure(client, statements, _with(url, limit=size), headers)
        assert len(items_of(response)) == size
        counts[f"limit={size}"] = len(sent)
        cursor = response.json()["next_cursor"]
        sent, response = await measure(
            client, statements, _with(url, limit=size, cursor=cursor), headers
        )
        assert len(items_of(response)) == size
        counts[f"limit={size}&cursor"] = len(sent)
        assert select_count(sent) == len(sent)
    assert set(counts.values()) == {1}, counts


async def test_read_post_is_exactly_one_statement(
    client: httpx.AsyncClient, world: World, statements: list[str]
) -> None:
    url = f"/posts/{world.post_id}"
    for headers, liked in (({}, None), (world.hub.headers, True)):
        sent, response = await measure(client, statements, url, headers)
        assert response.json()["liked_by_me"] is liked
        assert response.json()["tags"] == ["bench", "even"]
        assert len(sent) == 1, sent
        assert select_count(sent) == 1


@pytest.mark.parametrize("viewer", ["anonymous", "logged_in"])
async def test_comment_pages_run_one_select_for_any_page_size(
    client: httpx.AsyncClient, world: World, statements: list[str], viewer: str
) -> None:
    url = f"/posts/{world.post_id}/comments"
    headers = world.hub.headers if viewer == "logged_in" else {}
    counts: dict[str, int] = {}
    for size in PAGE_SIZES:
        sent, response = await measure(client, statements, _with(url, limit=size), headers)
        first = items_of(response)
        assert len(first) == size
        counts[f"limit={size}"] = len(sent)
        cursor = response.json()["next_cursor"]
        sent, response = await measure(
            client, statements, _with(url, limit=size, cursor=cursor), headers
        )
        second = items_of(response)
        assert len(second) == size
        assert not {item["id"] for item in second} & {item["id"] for item in first}
        counts[f"limit={size}&cursor"] = len(sent)
        assert select_count(sent) == len(sent)
    assert set(counts.values()) == {1}, counts


async def test_tags_are_one_statement_then_none_from_the_cache(
    client: httpx.AsyncClient, world: World, statements: list[str]
) -> None:
    sent, response = await measure(client, statements, "/tags/", {})
    assert response.json() == ["bench", "even", "odd"]
    assert select_count(sent) == len(sent) == 1, sent
    sent, response = await measure(client, statements, "/tags/", {})
    assert response.json() == ["bench", "even", "odd"]
    assert sent == []


async def test_user_overview_is_exactly_three_statements(
    client: httpx.AsyncClient, world: World, statements: list[str]
) -> None:
    url = f"/users/{world.hub.id}/overview"
    for headers in ({}, world.hub.headers):
        sent, response = await measure(client, statements, url, headers)
        body = response.json()
        assert (len(body["latest_posts"]), len(body["friends"])) == (5, 10)
        assert len(sent) == 3, sent
        assert select_count(sent) == 3


async def test_an_empty_user_list_costs_one_more_select_to_tell_no_one_from_no_user(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    loner = await factory.user()
    for relation in ("followers", "following", "friends"):
        sent, response = await measure(client, statements, f"/users/{loner.id}/{relation}", {})
        assert items_of(response) == []
        assert select_count(sent) == len(sent) == 2, sent
