"""How row ids are made, and why they look the way they do.

Two constraints shape them:
- Rows from several databases (shards, split by author) are merged in one response and
  in analytics, so an id must be unique across every database, not only inside one.
- Browsers parse JSON numbers as IEEE doubles: integers above 2**53 silently lose their
  low bits in a JavaScript client. So every id stays below 2**53.

Each database therefore numbers its rows from its own sequence, started at the beginning
of its shard's range: `id = shard_id << LOCAL_BITS | n`. With 5 shard bits and 48 local
bits that is 32 shards of 2.8e14 ids each, all below 2**53. The database makes the id
(an identity column in PostgreSQL, the rowid in SQLite), so writers in any number of
processes never coordinate, and the shard that owns a row can be read off its id.
"""

from __future__ import annotations

SHARD_BITS = 5
LOCAL_BITS = 48
MAX_SHARDS = 1 << SHARD_BITS
MAX_ID = (1 << (SHARD_BITS + LOCAL_BITS)) - 1  # 2**53 - 1: exact in a JavaScript number

assert MAX_ID < 2**53


def first_id(shard_id: int) -> int:
    """Return the first id of a shard's range."""
    if not 0 <= shard_id < MAX_SHARDS:
        raise ValueError(f"shard_id must be in [0, {MAX_SHARDS}), got {shard_id}")
    return (shard_id << LOCAL_BITS) + 1


def shard_of(row_id: int) -> int:
    """Return the shard that made an id."""
    return row_id >> LOCAL_BITS
