"""Preparing and inspecting sharded mode's databases: `fastpost shards init | status`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings
from fastpost.shards.router import drop_cross_shard_foreign_keys
from fastpost.shards.shard_map import ShardMap, create_shard_map, load_shard_map

# The tables `status` reports; users and posts also per logical shard (by their ids).
TABLES = ("users", "posts", "likes", "follows", "post_tags", "tags", "comments")
NUMBERED = ("users", "posts")


async def init_shards(settings: DatabaseSettings) -> ShardMap:
    """Migrate every database of FASTPOST_DB__SHARDS, drop the foreign keys no shard can
    keep, and write the round-robin shard map on the directory (unless one is there).
    Safe to run again."""
    for url in settings.shards:
        db = Database(settings.for_shard(url))
        try:
            await upgrade(db.write_engine, db.settings)
            await drop_cross_shard_foreign_keys(db)
        finally:
            await db.dispose()
    directory = Database(settings.for_shard(settings.shards[0]))
    try:
        return await create_shard_map(directory, len(settings.shards))
    finally:
        await directory.dispose()


_USER_ID_NAMED = text("SELECT user_id FROM user_directory WHERE username_lower = lower(:username)")


async def user_database_settings(
    settings: DatabaseSettings, username: str
) -> DatabaseSettings | None:
    """The settings of the database that holds the user with this name (any case), read
    from the directory and the shard map; None when no user has it (the admin commands)."""
    directory = Database(settings.for_shard(settings.shards[0]))
    try:
        shard_map = await load_shard_map(directory, len(settings.shards))
        async with directory.reader() as conn:
            user_id = await conn.scalar(_USER_ID_NAMED, {"username": username})
    finally:
        await directory.dispose()
    if user_id is None:
        return None
    return settings.for_shard(settings.shards[shard_map.database_of(int(user_id))])


@dataclass
class TableStatus:
    name: str
    rows: int
    bytes: int


@dataclass
class DatabaseStatus:
    index: int
    url: str  # without its password
    logical_shards: list[int]
    tables: list[TableStatus] = field(default_factory=list)
    # (table, logical shard) -> rows numbered from that shard's range
    by_logical: dict[tuple[str, int], int] = field(default_factory=dict)


async def shard_status(settings: DatabaseSettings) -> list[DatabaseStatus]:
    """Per physical database: its logical shards, and rows and bytes per table."""
    directory = Database(settings.for_shard(settings.shards[0]))
    try:
        shard_map = await load_shard_map(directory, len(settings.shards))
    finally:
        await directory.dispose()
    found: list[DatabaseStatus] = []
    for index, url in enumerate(settings.shards):
        status = DatabaseStatus(
            index,
            make_url(url).render_as_string(hide_password=True),
            shard_map.logical_shards_of(index),
        )
        db = Database(settings.for_shard(url))
        try:
            async with db.reader() as conn:
                for table in TABLES:
                    # Table names are ours (TABLES), never input.
                    row = (
                        await conn.execute(
                            text(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
                        )
                    ).one()
                    status.tables.append(TableStatus(table, int(row[0]), int(row[1])))
                for table in NUMBERED:
                    rows = await conn.execute(
                        text(f"SELECT id >> 48, count(*) FROM {table} GROUP BY 1 ORDER BY 1")
                    )
                    for logical, count in rows.all():
                        status.by_logical[(table, int(logical))] = int(count)
        finally:
            await db.dispose()
        found.append(status)
    return found
