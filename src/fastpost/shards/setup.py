"""Preparing and inspecting sharded mode's databases: `fastpost shards init | status`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings
from fastpost.shards.router import drop_cross_shard_foreign_keys
from fastpost.shards.shard_map import (
    ShardMap,
    ShardMapMissing,
    create_shard_map,
    load_shard_map,
    sequence_name,
)

# The tables `status` reports; users and posts also per logical shard (by their ids).
TABLES = ("users", "posts", "likes", "follows", "post_tags", "tags", "comments")
NUMBERED = ("users", "posts")


# Tables whose ids are numbered per logical shard in sharded mode.
SEQUENCED = ("users", "posts", "comments")


class ShardsMisplaced(RuntimeError):
    """Rows already on a database belong to logical shards the map puts elsewhere."""


async def init_shards(settings: DatabaseSettings) -> ShardMap:
    """Migrate every database of FASTPOST_DB__SHARDS, drop the foreign keys no shard can
    keep, write the round-robin shard map on the directory (unless one is there), and take
    in rows already there (a database that served unsharded): each logical shard's sequence
    moves past its ids, and every user gets their directory row. Safe to run again."""
    highest: list[dict[int, int]] = []
    for url in settings.shards:
        db = Database(settings.for_shard(url))
        try:
            await upgrade(db.write_engine, db.settings)
            await drop_cross_shard_foreign_keys(db)
            highest.append(await _highest_ids(db))
        finally:
            await db.dispose()
    directory = Database(settings.for_shard(settings.shards[0]))
    try:
        # Checked against the map in force (or about to be) before anything is written.
        try:
            shard_map = await load_shard_map(directory, len(settings.shards))
        except ShardMapMissing:
            shard_map = ShardMap.round_robin(len(settings.shards))
        for index, found in enumerate(highest):
            elsewhere = sorted(set(found) - set(shard_map.logical_shards_of(index)))
            if elsewhere:
                raise ShardsMisplaced(
                    f"database {index} holds rows of logical shards {elsewhere}, which the shard "
                    "map puts on other databases: list the database that served unsharded "
                    "first in FASTPOST_DB__SHARDS (its rows are logical shard 0)"
                )
        shard_map = await create_shard_map(directory, len(settings.shards))
        for url, found in zip(settings.shards, highest, strict=True):
            db = Database(settings.for_shard(url))
            try:
                await _advance_sequences(db, found)
                await _fill_directory(db, directory)
            finally:
                await db.dispose()
        return shard_map
    finally:
        await directory.dispose()


async def _highest_ids(db: Database) -> dict[int, int]:
    """The highest id of each logical shard among the rows already on a database."""
    found: dict[int, int] = {}
    async with db.reader() as conn:
        for table in SEQUENCED:
            rows = await conn.execute(text(f"SELECT id >> 48, max(id) FROM {table} GROUP BY 1"))
            for logical, top in rows.all():
                found[int(logical)] = max(found.get(int(logical), 0), int(top))
    return found


async def _advance_sequences(db: Database, highest: dict[int, int]) -> None:
    """Move each logical shard's sequence past the ids already taken (never back)."""
    async with db.transaction() as session:
        for logical, top in highest.items():
            name = sequence_name(logical)
            last, called = (
                await session.execute(text(f"SELECT last_value, is_called FROM {name}"))
            ).one()
            following = int(last) + 1 if called else int(last)
            # Only when the next id is taken already: a sequence in use (init run again on a
            # serving set) is past every row it numbered, and is left alone.
            if top >= following:
                await session.execute(text(f"SELECT setval('{name}', {int(top)})"))


_USERS_AFTER = text(
    "SELECT lower(username), email, id FROM users WHERE id > :after ORDER BY id LIMIT 5000"
)
_CLAIM_MANY = text(
    "INSERT INTO user_directory (username_lower, email, user_id) "
    "SELECT * FROM unnest(CAST(:names AS text[]), CAST(:emails AS text[]), "
    "CAST(:ids AS bigint[])) ON CONFLICT DO NOTHING"
)


async def _fill_directory(db: Database, directory: Database) -> None:
    """Give every user of a database their directory row, 5,000 at a time."""
    after = 0
    while True:
        async with db.reader() as conn:
            rows = (await conn.execute(_USERS_AFTER, {"after": after})).all()
        if not rows:
            return
        async with directory.transaction() as session:
            await session.execute(
                _CLAIM_MANY,
                {
                    "names": [r[0] for r in rows],
                    "emails": [r[1] for r in rows],
                    "ids": [int(r[2]) for r in rows],
                },
            )
        after = int(rows[-1][2])


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
