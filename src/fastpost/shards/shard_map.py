"""The shard map: which physical database hosts each of the 32 logical shards.

A table on the directory database, `shard_map(logical, database, version)`, made round-robin
(`logical % n`) by `fastpost shards init` and read once at start-up into a ShardMap. Each
entry carries a version, so that moving one logical shard (a later slice: `shards move`)
is one row updated with a bumped version, which instances notice by comparing versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text

from fastpost.db import Database
from fastpost.ids import MAX_SHARDS, shard_of

LOGICAL_SHARDS = MAX_SHARDS  # one per shard number an id can carry (fastpost.ids)


def sequence_name(logical: int) -> str:
    """The sequence that numbers a logical shard's rows (migration 0008)."""
    return f"fastpost_shard_ids_{logical:02d}"


# Interned once: every insert in sharded mode names its logical shard's sequence.
SEQUENCES = tuple(sequence_name(logical) for logical in range(LOGICAL_SHARDS))


def logical_shard_for_username(username: str) -> int:
    """Where a new user lives: spread uniformly over the logical shards by their name,
    whatever its case (a stable hash: Python's hash() differs between processes)."""
    digest = hashlib.blake2b(username.lower().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % LOGICAL_SHARDS


@dataclass(frozen=True, slots=True)
class ShardMap:
    """Logical shard -> index of its physical database in FASTPOST_DB__SHARDS."""

    databases: tuple[int, ...]  # indexed by logical shard
    versions: tuple[int, ...]

    @classmethod
    def round_robin(cls, physical: int) -> ShardMap:
        """The initial map: logical shard L on database L % physical."""
        return cls(
            tuple(logical % physical for logical in range(LOGICAL_SHARDS)),
            (1,) * LOGICAL_SHARDS,
        )

    def database_of(self, row_id: int) -> int:
        """The physical database that holds a row (user, post), read off its id."""
        return self.databases[shard_of(row_id)]

    def logical_shards_of(self, database: int) -> list[int]:
        return [logical for logical, db in enumerate(self.databases) if db == database]


_CREATE_ROWS = text(
    "INSERT INTO shard_map (logical, database, version) "
    "SELECT * FROM unnest(CAST(:logical AS smallint[]), CAST(:database AS smallint[]), "
    "CAST(:version AS bigint[])) ON CONFLICT (logical) DO NOTHING"
)
_READ = text("SELECT logical, database, version FROM shard_map ORDER BY logical")


async def create_shard_map(directory: Database, physical: int) -> ShardMap:
    """Write the round-robin map on the directory, unless a map is there already; return the
    map in force."""
    initial = ShardMap.round_robin(physical)
    async with directory.transaction() as session:
        await session.execute(
            _CREATE_ROWS,
            {
                "logical": list(range(LOGICAL_SHARDS)),
                "database": list(initial.databases),
                "version": list(initial.versions),
            },
        )
    return await load_shard_map(directory, physical)


class ShardMapMissing(RuntimeError):
    pass


async def load_shard_map(directory: Database, physical: int) -> ShardMap:
    """Read the map from the directory; refuse one that is incomplete or names a database
    beyond the `physical` configured."""
    async with directory.reader() as conn:
        rows: Sequence[tuple[int, int, int]] = [
            (int(r[0]), int(r[1]), int(r[2])) for r in (await conn.execute(_READ)).all()
        ]
    if len(rows) != LOGICAL_SHARDS or [r[0] for r in rows] != list(range(LOGICAL_SHARDS)):
        raise ShardMapMissing(
            f"the shard map on the directory database has {len(rows)} of {LOGICAL_SHARDS} "
            "logical shards: run `fastpost shards init`"
        )
    beyond = sorted({r[1] for r in rows if not 0 <= r[1] < physical})
    if beyond:
        raise ShardMapMissing(
            f"the shard map names databases {beyond}, but FASTPOST_DB__SHARDS has {physical}"
        )
    return ShardMap(tuple(r[1] for r in rows), tuple(r[2] for r in rows))
