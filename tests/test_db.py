"""The data layer: connection settings, the two ways in, no implicit I/O."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import InvalidRequestError

from fastpost.db import Database
from fastpost.observability.statements import record_statements
from fastpost.posts.models import Post
from tests.conftest import Factory


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite connection settings")
    async with db.reader() as conn:
        pragmas = {
            name: await conn.scalar(text(f"PRAGMA {name}"))
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,  # NORMAL
    }


async def test_sqlite_write_transactions_take_the_write_lock_at_begin(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite locking")
    async with db.transaction() as session:
        await session.execute(text("SELECT 1"))
        # Another connection cannot start a write now: BEGIN IMMEDIATE already holds the lock.
        async with db.reader() as other:
            await other.execute(text("PRAGMA busy_timeout=0"))
            with pytest.raises(Exception, match="locked"):
                await other.execute(text("BEGIN IMMEDIATE"))


async def test_relationships_never_load_implicitly(db: Database, factory: Factory) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    async with db.transaction() as session:
        post = await session.scalar(select(Post).where(Post.id == post_id))
        assert post is not None
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = post.author


async def test_record_statements_sees_statements_of_spawned_tasks(db: Database) -> None:
    import asyncio

    async def read() -> None:
        async with db.reader() as conn:
            await conn.execute(text("SELECT 1"))

    with record_statements() as log:
        await asyncio.gather(read(), read())
    assert len(log) == 2


async def test_a_failed_write_leaves_nothing_behind(db: Database, factory: Factory) -> None:
    author = await factory.user()

    async def write_then_fail() -> None:
        async with db.transaction() as session:
            session.add(Post(author_id=author.id, title="t", content="c", status="published"))
            await session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    async with db.reader() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM posts")) == 0
