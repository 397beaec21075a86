"""`fastpost seed`'s loader: what it writes, that it writes it the same way every time, and
that it writes all of it or nothing, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastpost import seed as seed_module
from fastpost.seed import DEMO_PASSWORD, DEMO_USERNAME, SeedPlan, SeedReport, seed
from fastpost.settings import Settings

PLAN = SeedPlan(users=40, posts=300, follows=200, likes=900, seed=7)
TABLES = ("users", "posts", "likes", "follows")


async def fetch(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(settings.db.url)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(sql))]
    finally:
        await engine.dispose()


async def counts(settings: Settings) -> dict[str, int]:
    return {
        table: (await fetch(settings, f"SELECT count(*) FROM {table}"))[0][0] for table in TABLES
    }


async def empty_again(settings: Settings) -> None:
    """Back to a freshly migrated state, ids starting over."""
    engine = create_async_engine(settings.db.url)
    try:
        async with engine.begin() as conn:
            if settings.db.is_sqlite:
                # Without AUTOINCREMENT a rowid table numbers from max(id) + 1 again.
                for table in ("post_tags", "tags", "likes", "follows", "posts", "users"):
                    await conn.execute(text(f"DELETE FROM {table}"))
            else:
                await conn.execute(
                    text(
                        "TRUNCATE likes, follows, post_tags, tags, comments, post_counts, posts, "
                        "users RESTART IDENTITY"
                    )
                )
    finally:
        await engine.dispose()


async def schema_objects(settings: Settings) -> list[tuple[Any, ...]]:
    """Every index and constraint definition on our tables, as PostgreSQL renders them."""
    ours = "('users', 'posts', 'likes', 'follows')"
    return await fetch(
        settings,
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
        f"WHERE indrelid::regclass::text IN {ours} "
        "UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid::regclass::text IN {ours} ORDER BY 1",
    )


async def run(settings: Settings, plan: SeedPlan = PLAN) -> SeedReport:
    return await seed(settings, plan, lambda table, rows: None)


async def test_seed_loads_the_planned_rows_and_reports_progress_for_each(
    settings: Settings,
) -> None:
    seen: Counter[str] = Counter()

    def progress(table: str, rows: int) -> None:
        seen[table] += rows

    report = await seed(settings, PLAN, progress)

    planned = {"users": 40, "posts": 300, "likes": 900, "follows": 200}
    assert {table: report.counts[table] for table in TABLES} == planned
    assert await counts(settings) == planned
    assert {table: seen[table] for table in TABLES} == planned
    # Each post draws 0 to 3 tags: about 1.5 a post.
    tagged = (await fetch(settings, "SELECT count(*) FROM post_tags"))[0][0]
    assert report.counts["post_tags"] == seen["post_tags"] == tagged
    assert 300 < tagged < 600
    assert report.rows == 1440 + tagged
    assert report.rows_per_second > 0


async def test_demo_user_logs_in_with_its_password_and_sees_seeded_posts(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    await run(settings)

    login = await client.post(
        "/auth/login", json={"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == DEMO_USERNAME
    posts = await client.get("/posts")
    assert posts.status_code == 200
    assert posts.json()["items"]


async def test_likes_count_of_every_post_equals_its_likes(settings: Settings) -> None:
    await run(settings)

    mismatched = await fetch(
        settings,
        "SELECT p.id, p.likes_count, count(l.post_id) FROM posts AS p "
        "LEFT JOIN likes AS l ON l.post_id = p.id "
        "GROUP BY p.id, p.likes_count HAVING p.likes_count <> count(l.post_id)",
    )
    assert mismatched == []
    # Skewed, as the feeds and "popular" lists need: some posts liked a lot, some not at all.
    spread = await fetch(settings, "SELECT min(likes_count), max(likes_count) FROM posts")
    assert spread[0][0] == 0
    assert spread[0][1] >= 10


async def test_same_seed_gives_same_data_in_fresh_databases(settings: Settings) -> None:
    queries = (
        "SELECT id, username, email, bio FROM users ORDER BY id",
        "SELECT id, author_id, title, content, status, likes_count FROM posts ORDER BY id",
        "SELECT user_id, post_id FROM likes ORDER BY user_id, post_id",
        "SELECT follower_id, followee_id FROM follows ORDER BY follower_id, followee_id",
        "SELECT p.id, t.name FROM post_tags AS pt JOIN posts AS p ON p.id = pt.post_id "
        "JOIN tags AS t ON t.id = pt.tag_id ORDER BY p.id, t.name",
    )
    await run(settings)
    first = [await fetch(settings, sql) for sql in queries]
    await empty_again(settings)
    await run(settings)
    second = [await fetch(settings, sql) for sql in queries]
    await empty_again(settings)
    await run(settings, SeedPlan(users=40, posts=300, follows=200, likes=900, seed=8))
    other_seed = [await fetch(settings, sql) for sql in queries]

    assert first == second
    assert len(first[1]) == 300
    titles = [row[2] for row in first[1]]
    assert titles != [row[2] for row in other_seed[1]]
    # Titles vary from post to post, not a handful repeated.
    assert len(set(titles)) > 290


async def test_seeding_twice_appends_with_fresh_ids_and_one_demo_user(
    settings: Settings,
) -> None:
    await run(settings)
    await run(settings)

    assert await counts(settings) == {"users": 80, "posts": 600, "likes": 1800, "follows": 400}
    for table in ("users", "posts"):
        distinct = await fetch(settings, f"SELECT count(DISTINCT id) FROM {table}")
        assert distinct[0][0] == (80 if table == "users" else 600)
    demo = await fetch(settings, f"SELECT count(*) FROM users WHERE username = '{DEMO_USERNAME}'")
    assert demo[0][0] == 1
    # The second batch points at its own users and posts, and its counts still add up.
    mismatched = await fetch(
        settings,
        "SELECT p.id FROM posts AS p LEFT JOIN likes AS l ON l.post_id = p.id "
        "GROUP BY p.id, p.likes_count HAVING p.likes_count <> count(l.post_id)",
    )
    assert mismatched == []


async def test_follows_are_distinct_and_never_self_follows_even_when_dense(
    settings: Settings,
) -> None:
    # 6 users can make at most 6 x 5 = 30 follows: the plan asks for all of them.
    report = await run(settings, SeedPlan(users=6, posts=10, follows=30, likes=20, seed=3))

    assert report.counts["follows"] == 30
    pairs = await fetch(settings, "SELECT follower_id, followee_id FROM follows")
    assert len(set(pairs)) == 30
    assert all(follower != followee for follower, followee in pairs)


async def test_failure_mid_seed_leaves_no_rows_and_the_schema_intact(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [] if settings.db.is_sqlite else await schema_objects(settings)
    real_likes = seed_module.RowGenerator.likes

    def likes_then_fail(self: seed_module.RowGenerator) -> Iterator[tuple[Any, ...]]:
        for n, row in enumerate(real_likes(self)):
            if n == 100:
                raise RuntimeError("generator failed mid-table")
            yield row

    monkeypatch.setattr(seed_module.RowGenerator, "likes", likes_then_fail)

    with pytest.raises(RuntimeError, match="mid-table"):
        await run(settings)

    assert await counts(settings) == dict.fromkeys(TABLES, 0)
    assert (await fetch(settings, "SELECT count(*) FROM post_tags"))[0][0] == 0
    if not settings.db.is_sqlite:
        # The indexes taken off for the load came back with the rollback.
        assert await schema_objects(settings) == before


async def test_bulk_load_puts_back_every_index_and_constraint_as_migrated(
    settings: Settings,
) -> None:
    if settings.db.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite keeps its indexes through a load")
    before = await schema_objects(settings)
    assert any("USING gin (search_vector)" in row[0] for row in before)

    await run(settings)  # into empty tables: indexes come off and go back
    after_bulk = await schema_objects(settings)
    await run(settings)  # as many rows again as there are: indexes stay on

    assert after_bulk == before
    assert await schema_objects(settings) == before
    found = await fetch(
        settings, "SELECT count(*) FROM posts WHERE search_vector @@ to_tsquery('english', 'cache')"
    )
    assert found[0][0] > 0


async def test_impossible_targets_stop_at_one_like_per_user_and_post(settings: Settings) -> None:
    # 3 users can like each of 2 posts once: 6 likes at most, and 3 x 2 follows.
    report = await run(settings, SeedPlan(users=3, posts=2, follows=50, likes=50, seed=1))

    planned = {"users": 3, "posts": 2, "likes": 6, "follows": 6}
    assert {table: report.counts[table] for table in TABLES} == planned
    likes = await fetch(settings, "SELECT user_id, post_id FROM likes")
    assert len(set(likes)) == 6


async def test_posts_carry_up_to_three_tags_from_the_plan_and_tag_counters_add_up(
    settings: Settings,
) -> None:
    await run(settings, SeedPlan(users=40, posts=300, follows=200, likes=900, tags=8, seed=7))

    names = {row[0] for row in await fetch(settings, "SELECT name FROM tags")}
    assert names == set(seed_module.tag_names(SeedPlan(tags=8)))
    per_post = await fetch(
        settings,
        "SELECT count(pt.tag_id) FROM posts AS p "
        "LEFT JOIN post_tags AS pt ON pt.post_id = p.id GROUP BY p.id",
    )
    assert {row[0] for row in per_post} == {0, 1, 2, 3}
    # Each row carries its post's created_at: a tag's posts are listed from one index.
    unlike_post = await fetch(
        settings,
        "SELECT count(*) FROM post_tags AS pt JOIN posts AS p ON p.id = pt.post_id "
        "WHERE pt.created_at IS NULL OR pt.created_at <> p.created_at",
    )
    assert unlike_post[0][0] == 0
    # The counters behind GET /api/tags and articlesCount by tag match a recount.
    mismatched = await fetch(
        settings,
        "SELECT t.id FROM tags AS t "
        "LEFT JOIN post_counts AS c ON c.kind = 't' AND c.ref_id = t.id "
        "GROUP BY t.id, c.n HAVING coalesce(c.n, 0) <> ("
        "  SELECT count(*) FROM post_tags AS pt JOIN posts AS p ON p.id = pt.post_id "
        "  WHERE pt.tag_id = t.id AND p.status = 'published')",
    )
    assert mismatched == []


async def test_seeding_again_reuses_the_tags_already_there(settings: Settings) -> None:
    await run(settings)
    await run(settings)

    assert (await fetch(settings, "SELECT count(*) FROM tags"))[0][0] == PLAN.tags


async def test_post_counts_match_a_full_recount_after_seeding_twice(settings: Settings) -> None:
    # PostgreSQL takes the counters from the generator, not from its disabled triggers.
    await run(settings)
    await run(settings, SeedPlan(users=30, posts=200, follows=100, likes=700, tags=5, seed=9))

    recount = (
        "SELECT 'a', 0, count(*) FROM posts WHERE status = 'published' "
        "UNION ALL SELECT 'u', author_id, count(*) FROM posts WHERE status = 'published' "
        "GROUP BY author_id "
        "UNION ALL SELECT 't', pt.tag_id, count(*) FROM post_tags AS pt "
        "JOIN posts AS p ON p.id = pt.post_id WHERE p.status = 'published' GROUP BY pt.tag_id "
        "UNION ALL SELECT 'f', l.user_id, count(*) FROM likes AS l "
        "JOIN posts AS p ON p.id = l.post_id WHERE p.status = 'published' GROUP BY l.user_id"
    )
    expected = sorted(await fetch(settings, recount))
    stored = sorted(await fetch(settings, "SELECT kind, ref_id, n FROM post_counts WHERE n > 0"))
    assert stored == expected
    assert {row[0] for row in stored} == {"a", "u", "t", "f"}


async def test_failure_while_posts_stream_leaves_no_rows_and_stops_the_encoder(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_posts = seed_module.RowGenerator.posts

    def posts_then_fail(self: seed_module.RowGenerator) -> Iterator[tuple[Any, ...]]:
        for n, row in enumerate(real_posts(self)):
            if n == 150:
                raise RuntimeError("generator failed mid-posts")
            yield row

    monkeypatch.setattr(seed_module.RowGenerator, "posts", posts_then_fail)

    with pytest.raises(RuntimeError, match="mid-posts"):
        await run(settings)

    assert await counts(settings) == dict.fromkeys(TABLES, 0)
    assert seed_module.ENCODER_THREAD not in {t.name for t in threading.enumerate()}
