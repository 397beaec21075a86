"""Shards: one Database per physical database, and which one a row lives on."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy import text

from fastpost.db import Database, Row
from fastpost.errors import ServiceUnavailable
from fastpost.ids import shard_of
from fastpost.observability.statements import StatementRecorder
from fastpost.settings import DatabaseSettings
from fastpost.shards.shard_map import LOGICAL_SHARDS, SEQUENCES, ShardMap, load_shard_map

# How long a write waits for a frozen logical shard (a move's last step, a matter of
# seconds) before it is answered 503 with Retry-After rather than kept hanging.
FREEZE_WAIT_SECONDS = 10.0


class ShardFrozen(ServiceUnavailable):
    code = "shard_moving"


# Cross-shard references: a like, a comment or a follow names a user who may live on another
# database, where no foreign key can reach. `fastpost shards init` drops these on every
# database; a user's deletion then cleans their rows elsewhere itself (not ported yet).
CROSS_SHARD_FOREIGN_KEYS = (
    ("likes", "user_id"),
    ("comments", "author_id"),
    ("follows", "follower_id"),
    ("follows", "followee_id"),
)


class Shards:
    """The physical databases of sharded mode and the shard map over them."""

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        statement_timeout: float | None = None,
        statements: StatementRecorder | None = None,
    ):
        # One recorder for all: the app's metrics and statement log see every database.
        recorder = statements or StatementRecorder()
        self.databases: list[Database] = [
            Database(
                settings.for_shard(url), statement_timeout=statement_timeout, statements=recorder
            )
            for url in settings.shards
        ]
        self.map: ShardMap = ShardMap.round_robin(len(self.databases))  # until load()
        self.freeze_wait = FREEZE_WAIT_SECONDS
        # Set by the map watcher (map_watch.py): until when this instance's map is recent
        # enough to write by. A move waits only for instances seen within that lease, so an
        # instance that lost sight of the map must not write on an old one.
        self.fresh_until: float | None = None
        # Writes running per logical shard: a freeze is acknowledged once its count is 0.
        self.in_flight = [0] * LOGICAL_SHARDS
        self._changed = asyncio.Event()

    @property
    def directory(self) -> Database:
        """The first database: it also holds the shard map and the user directory."""
        return self.databases[0]

    async def connect(self) -> None:
        """Open every database's read pool and read the shard map."""
        for db in self.databases:
            await db.connect()
        self.map = await load_shard_map(self.directory, len(self.databases))

    def each(self) -> Sequence[Database]:
        return self.databases

    def for_id(self, row_id: int) -> Database:
        """The database of a user or a post, by its id."""
        return self.databases[self.map.databases[shard_of(row_id)]]

    def for_logical(self, logical: int) -> Database:
        return self.databases[self.map.databases[logical]]

    def apply_map(self, shard_map: ShardMap) -> None:
        """Serve by a newer map; wake the writes waiting for a frozen shard or a fresh map."""
        self.map = shard_map
        self._changed.set()
        self._changed = asyncio.Event()

    def renewed(self, until: float) -> None:
        self.fresh_until = until
        self._changed.set()
        self._changed = asyncio.Event()

    def _may_write(self, logical: int) -> bool:
        if self.map.is_frozen(logical):
            return False
        return self.fresh_until is None or time.monotonic() < self.fresh_until

    @asynccontextmanager
    async def writing(self, logical: int) -> AsyncIterator[Database]:
        """The database to write a logical shard's rows to, held for the write: the one
        gate of sharded writes. While the shard is frozen (a move's last step) it waits,
        then answers the database the map names after the switch; past freeze_wait, 503."""
        if not self._may_write(logical):
            deadline = time.monotonic() + self.freeze_wait
            while not self._may_write(logical):
                left = deadline - time.monotonic()
                changed = self._changed
                try:
                    if left <= 0:
                        raise TimeoutError
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    raise ShardFrozen(
                        "This account's shard is being moved: try again shortly",
                        retry_after=max(1, math.ceil(self.freeze_wait / 2)),
                    ) from None
        # No await between the check and the count: a freeze seen after this waits for it.
        self.in_flight[logical] += 1
        try:
            yield self.for_logical(logical)
        finally:
            self.in_flight[logical] -= 1
            if not self.in_flight[logical]:
                self._changed.set()
                self._changed = asyncio.Event()

    def writing_for(self, row_id: int) -> AbstractAsyncContextManager[Database]:
        """writing() for the logical shard of a user or a post."""
        return self.writing(shard_of(row_id))

    async def drained(self, logical: int) -> None:
        """Return once no write to the logical shard runs in this instance."""
        while self.in_flight[logical]:
            await self._changed.wait()

    def index_of(self, row_id: int) -> int:
        return self.map.databases[shard_of(row_id)]

    def owned(self, db: Database, rows: Sequence[Row], key: str = "id") -> Sequence[Row]:
        """The rows, read from `db`, of the logical shards the map gives it (by each row's id
        under `key`). From a move's copy to its delete, a logical shard's rows are on two
        databases: a list that asks several takes each row from the one the map names."""
        index = self.databases.index(db)
        databases = self.map.databases
        if all(databases[shard_of(row[key])] == index for row in rows):
            return rows
        return [row for row in rows if databases[shard_of(row[key])] == index]

    def group_by_database(self, row_ids: Iterable[int]) -> dict[int, list[int]]:
        """Ids grouped by the index of the database that holds them."""
        groups: dict[int, list[int]] = {}
        for row_id in row_ids:
            groups.setdefault(self.map.databases[shard_of(row_id)], []).append(row_id)
        return groups

    async def dispose(self) -> None:
        await asyncio.gather(*(db.dispose() for db in self.databases))

    def pool_usage(self) -> dict[str, tuple[int, int, int]]:
        """Every database's pools (the db_pool_connections gauge): the directory's under
        their own names, as GET /metrics samples app.state.db, the others' as
        `<pool>-<database index>`."""
        usage: dict[str, tuple[int, int, int]] = dict(self.directory.pool_usage())
        for n, db in enumerate(self.databases[1:], start=1):
            for name, value in db.pool_usage().items():
                usage[f"{name}-{n}"] = value
        return usage


async def drop_cross_shard_foreign_keys(db: Database) -> list[str]:
    """Drop the foreign keys of CROSS_SHARD_FOREIGN_KEYS on one database; return their names."""
    find = text(
        "SELECT c.conname FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.contype = 'f' AND c.conrelid = CAST(:table AS regclass) AND a.attname = :column"
    )
    dropped: list[str] = []
    async with db.transaction() as session:
        for table, column in CROSS_SHARD_FOREIGN_KEYS:
            names = (await session.execute(find, {"table": table, "column": column})).scalars()
            for name in list(names):
                # Names come from the catalogue, quoted all the same.
                await session.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
                dropped.append(f"{table}.{name}")
    return dropped


__all__ = ["SEQUENCES", "Shards", "drop_cross_shard_foreign_keys"]
