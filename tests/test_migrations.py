"""Alembic creates the same schema on SQLite and PostgreSQL, and SQLite's full-text index
follows every write."""

from __future__ import annotations

import warnings
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from fastpost.db import Database
from fastpost.migrations import current_revision, downgrade, upgrade
from tests.conftest import Factory

EXPECTED_INDEXES = {
    "users": {"ix_users_email_active"},
    "posts": {
        "ix_posts_author_created",
        "ix_posts_author_published",
        "ix_posts_status_created",
        "ix_posts_status_likes",
        "uq_posts_slug",
    },
    "follows": {"ix_follows_followee"},
    "likes": {"ix_likes_post"},
    "post_tags": {"ix_post_tags_tag_created"},
    "comments": {"ix_comments_post_created"},
}


def _indexes(inspector: Any, table: str) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        # SQLite's reflection skips indexes on expressions (uq_users_username_lower), with a
        # warning: test_usernames_are_unique_whatever_their_case_in_the_schema checks it.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        indexes: list[dict[str, Any]] = inspector.get_indexes(table)
    return indexes


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    tables = {}
    for name in ("users", "posts", "follows", "likes", "tags", "post_tags", "comments"):
        tables[name] = {
            "columns": {c["name"] for c in inspector.get_columns(name)} - {"search_vector"},
            "pk": set(inspector.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {i["name"] for i in _indexes(inspector, name)},
            "foreign_keys": {
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(name)
            },
        }
    return tables


async def test_the_migrated_schema_has_every_table_key_and_index(db: Database) -> None:
    assert await current_revision(db.write_engine) == "0008"
    async with db.reader() as conn:
        schema = await conn.run_sync(_schema)
    assert schema["users"]["columns"] == {
        "id", "username", "email", "password_hash", "bio", "image", "is_active", "is_admin",
        "created_at", "updated_at",
    }  # fmt: skip
    assert schema["posts"]["columns"] == {
        "id", "author_id", "title", "slug", "description", "content", "status",
        "likes_count", "created_at", "updated_at",
    }  # fmt: skip
    assert schema["comments"]["columns"] == {
        "id", "post_id", "author_id", "body", "created_at", "updated_at",
    }  # fmt: skip
    assert schema["post_tags"]["pk"] == {"post_id", "tag_id"}
    assert schema["post_tags"]["columns"] == {"post_id", "tag_id", "created_at"}
    assert (("post_id",), "posts") in schema["comments"]["foreign_keys"]
    assert schema["follows"]["pk"] == {"follower_id", "followee_id"}
    assert schema["likes"]["pk"] == {"user_id", "post_id"}
    for table, indexes in EXPECTED_INDEXES.items():
        assert indexes <= schema[table]["indexes"], table
    assert ((("post_id",), "posts")) in schema["likes"]["foreign_keys"]


async def test_postgres_has_a_gin_index_on_the_generated_search_vector(db: Database) -> None:
    if db.dialect != "postgresql":
        return
    async with db.reader() as conn:
        indexdef = await conn.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_posts_search'")
        )
    assert indexdef is not None
    assert "gin" in indexdef.lower()


async def test_ids_are_made_by_the_database_from_the_shard_range(
    db: Database, factory: Factory
) -> None:
    first = await factory.user()
    second = await factory.user()
    assert second.id == first.id + 1


async def test_full_text_search_follows_edits_and_deletes(client: Any, factory: Factory) -> None:
    author = await factory.user()
    post_id = (
        await client.post(
            "/posts/", headers=author.headers, json={"title": "Zebra", "content": "stripes"}
        )
    ).json()["id"]

    async def found(word: str) -> list[int]:
        return [p["id"] for p in (await client.get(f"/posts/search?q={word}")).json()]

    assert await found("zebra") == [post_id]
    await client.patch(f"/posts/{post_id}", headers=author.headers, json={"title": "Okapi"})
    assert await found("zebra") == []
    assert await found("okapi") == [post_id]
    await client.delete(f"/posts/{post_id}", headers=author.headers)
    assert await found("okapi") == []


async def _tagged_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.reader() as conn:
        result = await conn.execute(
            text(
                "SELECT pt.post_id, t.name, pt.created_at = p.created_at FROM post_tags AS pt "
                "JOIN posts AS p ON p.id = pt.post_id JOIN tags AS t ON t.id = pt.tag_id "
                "ORDER BY pt.post_id, t.name"
            )
        )
        return [tuple(row) for row in result]


async def test_post_tags_carry_their_posts_created_at_through_writes_and_migrations(
    client: Any, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    created = await client.post(
        "/posts/", json={"title": "T", "content": "C", "tags": ["b", "a"]}, headers=author.headers
    )
    post_id = created.json()["id"]
    await client.patch(f"/posts/{post_id}", json={"tags": ["a", "c"]}, headers=author.headers)
    before = await _tagged_rows(db)
    assert before == [(post_id, "a", True), (post_id, "c", True)]

    # 0002 had no copy of created_at; going back and up again fills it from the posts.
    await downgrade(db.write_engine, db.settings, "0002")
    async with db.reader() as conn:
        columns = await conn.run_sync(
            lambda c: {x["name"] for x in inspect(c).get_columns("post_tags")}
        )
    assert columns == {"post_id", "tag_id"}
    await upgrade(db.write_engine, db.settings)

    assert await current_revision(db.write_engine) == "0008"
    assert await _tagged_rows(db) == before
    listed = await client.get("/posts/", params={"tag": "c"})
    assert [post["id"] for post in listed.json()["items"]] == [post_id]
