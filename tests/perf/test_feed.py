"""The feed reads each followed author's newest posts from the author's own index range
(PostgreSQL) and returns the pages the newest-first walk returned, which SQLite keeps: the
same posts, order, cursors and totals, on data with ties, drafts, deleted posts and authors
no longer followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from fastpost.db import Database
from fastpost.pagination import Page
from fastpost.posts import queries
from fastpost.posts.models import Post
from fastpost.realworld import service as realworld_service
from fastpost.social import service as social_service
from tests.conftest import Factory, TestUser

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
PAGE_SIZES = (1, 3, 7, 100)


@dataclass
class Feed:
    reader: TestUser
    loner: TestUser  # follows nobody
    expected: list[int]  # the reader's feed, newest first
    slugs: dict[int, str]


def newest_first(posts: list[tuple[datetime, int]]) -> list[int]:
    return [post_id for _, post_id in sorted(posts, reverse=True)]


@pytest.fixture
async def feed(client: httpx.AsyncClient, factory: Factory, db: Database) -> Feed:
    """A reader following a prolific author (more posts than a page and an offset), two
    occasional ones and one they stop following; posts that share a timestamp across
    authors; drafts; a deleted post; posts of authors the reader never followed."""
    reader, loner, prolific, occasional, rare, dropped, stranger = await factory.users(7)
    for author in (prolific, occasional, rare, dropped):
        await factory.follow(reader, author)
    await factory.follow(stranger, reader)  # being followed adds nothing to a feed
    shown: list[tuple[datetime, int]] = []

    async def post(author: TestUser, second: int, *, status: str = "published") -> int:
        created_at = T0 + timedelta(seconds=second)
        post_id = await factory.post(author, created_at=created_at, status=status)
        if author in (prolific, occasional, rare) and status == "published":
            shown.append((created_at, post_id))
        return post_id

    for i in range(30):
        await post(prolific, i)
    for second in (0, 5, 5, 12, 29, 29):  # ties with the prolific author's, and each other's
        await post(occasional, second)
    await post(rare, 17)
    await post(prolific, 31, status="draft")
    await post(occasional, 30, status="draft")
    for second in (3, 14, 33):
        await post(dropped, second)
    for second in (5, 29, 40):
        await post(stranger, second)
    await post(reader, 50)  # one's own posts are not in one's feed

    deleted = await post(prolific, 35)
    response = await client.delete(f"/posts/{deleted}", headers=prolific.headers)
    assert response.status_code == 204
    shown.remove((T0 + timedelta(seconds=35), deleted))
    response = await client.delete(f"/users/{dropped.id}/follow", headers=reader.headers)
    assert response.status_code in (200, 204)

    async with db.reader() as conn:
        slugs = {row.id: row.slug for row in await conn.execute(select(Post.id, Post.slug))}
    return Feed(reader, loner, newest_first(shown), slugs)


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


@pytest.mark.parametrize("limit", PAGE_SIZES)
async def test_feed_pages_by_cursor_hold_every_followed_published_post_once_newest_first(
    client: httpx.AsyncClient, feed: Feed, limit: int
) -> None:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/feed", params=params, headers=feed.reader.headers)
        page = ids(response)
        assert page == feed.expected[len(seen) : len(seen) + limit]
        seen += page
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == feed.expected


@pytest.mark.parametrize("limit", PAGE_SIZES)
async def test_feed_pages_by_offset_are_slices_of_the_same_order(
    client: httpx.AsyncClient, feed: Feed, limit: int
) -> None:
    for offset in (0, 1, 2, 20, 29, len(feed.expected) - 1, len(feed.expected), 500):
        response = await client.get(
            "/feed", params={"limit": limit, "offset": offset}, headers=feed.reader.headers
        )
        assert ids(response) == feed.expected[offset : offset + limit], offset


@pytest.mark.parametrize("limit", PAGE_SIZES)
async def test_realworld_feed_pages_and_articles_count_match_the_native_feed(
    client: httpx.AsyncClient, feed: Feed, limit: int
) -> None:
    token = {"Authorization": "Token " + feed.reader.headers["Authorization"].split(" ", 1)[1]}
    expected = [feed.slugs[post_id] for post_id in feed.expected]
    for offset in (0, 1, 20, len(feed.expected) - 1, len(feed.expected), 500):
        response = await client.get(
            "/api/articles/feed", params={"limit": limit, "offset": offset}, headers=token
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [a["slug"] for a in body["articles"]] == expected[offset : offset + limit]
        assert body["articlesCount"] == len(feed.expected)  # past the end too
        assert all(a["author"]["following"] for a in body["articles"])


async def test_a_reader_following_nobody_has_an_empty_feed(
    client: httpx.AsyncClient, feed: Feed
) -> None:
    response = await client.get("/feed", headers=feed.loner.headers)
    assert ids(response) == []
    assert response.json()["next_cursor"] is None
    token = {"Authorization": "Token " + feed.loner.headers["Authorization"].split(" ", 1)[1]}
    body = (await client.get("/api/articles/feed", headers=token)).json()
    assert body == {"articles": [], "articlesCount": 0}


# --- PostgreSQL: the per-author read against the walk it replaced -------------------------

NATIVE = social_service._FEED
SHAPES = [(False, False), (True, False), (False, True)]


def requires_postgres(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("the per-author read is PostgreSQL's (SQLite has no LATERAL)")


@pytest.mark.parametrize("shape", SHAPES)
async def test_per_author_read_returns_the_pages_of_the_newest_first_walk(
    feed: Feed, db: Database, shape: tuple[bool, bool]
) -> None:
    requires_postgres(db)
    # The walk is the statement SQLite runs, and PostgreSQL ran before the per-author read.
    walk = queries.feed_statement("sqlite", NATIVE, shape)
    by_author = queries.feed_statement("postgresql", NATIVE, shape)
    assert walk is not by_author
    rw_read = realworld_service.post_read("postgresql", body=False, viewer=True)
    rw_walk = queries.feed_statement("sqlite", rw_read, shape, total=True)
    rw_by_author = queries.feed_statement("postgresql", rw_read, shape, total=True)
    async with db.reader() as conn:
        made = await conn.execute(select(Post.id, Post.created_at))
        stamps = {row.id: row.created_at for row in made}
    after_cursor, with_offset = shape
    for limit in (1, 4, 50):
        for start in (0, 3, 29, len(feed.expected)):
            if start > 0 and not (after_cursor or with_offset):
                continue  # the first page only
            if after_cursor and start == 0:
                continue  # a cursor follows a row
            page = Page(limit, None, start if with_offset else 0)
            params: dict[str, Any] = {"viewer_id": feed.reader.id, **page.params}
            if after_cursor:
                last = feed.expected[start - 1]
                params |= {"cursor_created_at": stamps[last], "cursor_id": last}
            rows = [dict(r) for r in await db.fetch_all(by_author, params)]
            assert rows == [dict(r) for r in await db.fetch_all(walk, params)]
            assert [r["id"] for r in rows] == feed.expected[start : start + limit + 1]
            totals = [dict(r) for r in await db.fetch_all(rw_by_author, params)]
            assert totals == [dict(r) for r in await db.fetch_all(rw_walk, params)]


def _literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


async def _generic_plan(db: Database, stmt: Any, params: dict[str, Any]) -> str:
    """EXPLAIN of the plan PostgreSQL caches for the statement prepared as the app sends
    it (asyncpg prepares each; after five calls the plan cache may keep a generic plan)."""
    compiled = stmt.compile(dialect=postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]
    values = {**compiled.params, **params}
    sql = str(compiled)
    async with db.reader() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await raw.execute(f"PREPARE feed_plan AS {sql}")
            try:
                args = ", ".join(_literal(values[name]) for name in compiled.positiontup)
                rows = await raw.fetch(f"EXPLAIN EXECUTE feed_plan({args})")
            finally:
                await raw.execute("DEALLOCATE feed_plan")
        finally:
            await raw.execute("RESET plan_cache_mode")
    return "\n".join(row[0] for row in rows)


async def test_feed_plan_reads_each_followed_authors_published_index_range(
    db: Database,
) -> None:
    requires_postgres(db)
    # Enough rows that reading the table would cost more than the index: 200 authors with
    # 50 posts each, a tenth of them drafts, and each reader following 20 of them.
    async with db.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO users (username, email, password_hash, created_at, updated_at)"
                " SELECT 'plan' || n, 'plan' || n || '@example.com', 'x', now(), now()"
                " FROM generate_series(1, 200) AS n"
            )
        )
        await session.execute(
            text(
                "INSERT INTO posts (author_id, title, slug, content, status, created_at,"
                " updated_at)"
                " SELECT u.id, 'Post ' || n, 'plan-' || u.id || '-' || n, 'Body',"
                " CASE WHEN n % 10 = 0 THEN 'draft' ELSE 'published' END,"
                " now() - n * interval '1 minute', now() FROM users u,"
                " generate_series(1, 50) AS n"
            )
        )
        await session.execute(
            text(
                "INSERT INTO follows (follower_id, followee_id, created_at)"
                " SELECT a.id, b.id, now() FROM users a JOIN users b"
                " ON b.id <> a.id AND (b.id - a.id + 200) % 10 = 1"
            )
        )
    async with db.reader() as conn:
        await conn.execute(text("ANALYZE users, posts, follows"))
        reader = await conn.scalar(text("SELECT min(id) FROM users"))
    stmt = queries.feed_statement("postgresql", NATIVE, (False, False))
    plan = await _generic_plan(db, stmt, {"viewer_id": reader, "limit": 21})
    assert "ix_posts_author_published" in plan, plan
    # Not the walk over every published post, newest first.
    assert "ix_posts_status_created" not in plan, plan
    rw_read = realworld_service.post_read("postgresql", body=False, viewer=True)
    stmt = queries.feed_statement("postgresql", rw_read, (False, True), total=True)
    plan = await _generic_plan(db, stmt, {"viewer_id": reader, "limit": 20, "offset": 40})
    assert "ix_posts_author_published" in plan, plan
