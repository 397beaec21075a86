"""post_counts, behind articlesCount, matches a count(*) of the filtered set after any mix of
writes: seeding (COPY on PostgreSQL), native and RealWorld writes, drafts, deletes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from fastpost.db import Database
from fastpost.seed import SeedPlan, seed
from fastpost.settings import Settings
from tests.conftest import Factory
from tests.helpers import databases_of
from tests.realworld.test_router import new_article, token_headers

# Each kind of counter against the count it stands for.
CHECKS = {
    "a": "SELECT 0 AS ref, count(*) FROM posts WHERE status = 'published'",
    "u": "SELECT author_id, count(*) FROM posts WHERE status = 'published' GROUP BY author_id",
    "t": "SELECT pt.tag_id, count(*) FROM post_tags pt JOIN posts p ON p.id = pt.post_id "
    "WHERE p.status = 'published' GROUP BY pt.tag_id",
    "f": "SELECT l.user_id, count(*) FROM likes l JOIN posts p ON p.id = l.post_id "
    "WHERE p.status = 'published' GROUP BY l.user_id",
}


async def assert_counters_exact(app: FastAPI) -> None:
    """On every database (in sharded mode each shard counts its own rows)."""
    for db in databases_of(app):
        await _assert_counters_exact(db)


async def _assert_counters_exact(db: Database) -> None:
    async with db.reader() as conn:
        for kind, sql in CHECKS.items():
            expected = {int(ref): int(n) for ref, n in (await conn.execute(text(sql))).all()}
            stored = (
                await conn.execute(
                    text("SELECT ref_id, n FROM post_counts WHERE kind = :kind AND n <> 0"),
                    {"kind": kind},
                )
            ).all()
            assert {int(ref): int(n) for ref, n in stored} == {
                ref: n for ref, n in expected.items() if n
            }, kind


async def test_counters_stay_exact_through_seeding_and_writes_of_both_apis(
    settings: Settings, app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    await seed(
        settings, SeedPlan(users=20, posts=150, follows=40, likes=300, seed=3), lambda *_: None
    )
    await assert_counters_exact(app)

    jake, anna = await factory.user("jake"), await factory.user("anna")
    first = await new_article(client, jake, tagList=["a", "b"])
    second = await new_article(client, anna, tagList=["b"])
    await client.post(f"/api/articles/{first['slug']}/favorite", headers=token_headers(anna))
    await client.post(f"/api/articles/{second['slug']}/favorite", headers=token_headers(jake))
    draft = (
        await client.post(
            "/posts/", json={"title": "d", "content": "d", "status": "draft"}, headers=jake.headers
        )
    ).json()
    await client.post(f"/posts/{draft['id']}/like", headers=jake.headers)
    await client.patch(f"/posts/{draft['id']}", json={"status": "published"}, headers=jake.headers)
    await client.put(
        f"/api/articles/{first['slug']}",
        json={"article": {"tagList": ["c"]}},
        headers=token_headers(jake),
    )
    await assert_counters_exact(app)

    await client.delete(f"/api/articles/{first['slug']}", headers=token_headers(jake))
    await client.delete(f"/api/articles/{second['slug']}/favorite", headers=token_headers(jake))
    await client.patch(f"/posts/{draft['id']}", json={"status": "draft"}, headers=jake.headers)
    await assert_counters_exact(app)
    total = (await client.get("/api/articles")).json()["articlesCount"]
    published = 0
    for db in databases_of(app):
        async with db.reader() as conn:
            published += await conn.scalar(
                text("SELECT count(*) FROM posts WHERE status = 'published'")
            )
    assert total == published
