"""The shard map: which physical database hosts each of the 32 logical shards.

A table on the directory database, `shard_map(logical, database, version, state)`, made
round-robin (`logical % n`) by `fastpost shards init`, read at start-up into a ShardMap and
again whenever it changes (map_watch.py). Each entry carries a version, bumped by every
change of its database or state, so that an instance tells what changed by comparing
versions. The state is `ready`, `moving` (being copied elsewhere: writes go on) or `frozen`
(the last step of a move: writes to that logical shard wait, router.Shards.writing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

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


READY, MOVING, FROZEN = "ready", "moving", "frozen"


@dataclass(frozen=True, slots=True)
class ShardMap:
    """Logical shard -> index of its physical database in FASTPOST_DB__SHARDS."""

    databases: tuple[int, ...]  # indexed by logical shard
    versions: tuple[int, ...]
    states: tuple[str, ...] = (READY,) * LOGICAL_SHARDS

    @classmethod
    def round_robin(cls, physical: int) -> ShardMap:
        """The initial map: logical shard L on database L % physical."""
        return cls(
            tuple(logical % physical for logical in range(LOGICAL_SHARDS)),
            (1,) * LOGICAL_SHARDS,
        )

    def is_frozen(self, logical: int) -> bool:
        return self.states[logical] == FROZEN

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
_READ = text("SELECT logical, database, version, state FROM shard_map ORDER BY logical")

# Beside the map (migration 0008), `shard_map_instances`: the instances serving with what
# they have applied (map_watch.py): `versions` holds, per logical shard, the version an
# instance has applied and, for a frozen entry, drained its writes under; `seen_at` its
# last look at the map (the directory's clock).


_SET_ENTRY = text(
    "UPDATE shard_map SET database = :database, state = :state, version = version + 1 "
    "WHERE logical = :logical RETURNING version"
)


async def set_entry(directory: Database, logical: int, database: int, state: str) -> int:
    """Change one entry (its database, its state) with its version bumped; return the new
    version."""
    async with directory.transaction() as session:
        version = (
            await session.execute(
                _SET_ENTRY, {"logical": logical, "database": database, "state": state}
            )
        ).scalar_one()
    return int(version)


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
        return await read_shard_map(conn, physical)


async def read_shard_map(conn: AsyncConnection, physical: int) -> ShardMap:
    """load_shard_map on a connection of the caller's."""
    rows: Sequence[tuple[int, int, int, str]] = [
        (int(r[0]), int(r[1]), int(r[2]), str(r[3])) for r in (await conn.execute(_READ)).all()
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
    return ShardMap(tuple(r[1] for r in rows), tuple(r[2] for r in rows), tuple(r[3] for r in rows))
