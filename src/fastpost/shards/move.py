"""`fastpost shards move LOGICAL --to DATABASE` and `rebalance`: a logical shard changes
database while the site serves.

The steps, each logged:
1. copy: the shard's rows (below) from a snapshot of the source onto the target, and the
   shard's sequence position; writes go on meanwhile (the map entry says `moving`);
2. freeze: the entry becomes `frozen` (version bumped, announced); every instance seen
   within the lease stops new writes to that logical shard, lets those running finish and
   says so (map_watch.py): from then on the source does not change for this shard;
3. catch up: the rows changed since 1, applied to the target;
4. verify: rows and a checksum per table equal on both sides; the target's sequence past
   the source's;
5. switch: the entry names the target and is `ready` again (version bumped, announced):
   the waiting writes go on, to the target;
6. delete the source's copy.
Before 5 the source is authoritative: a failure puts the entry back to `ready` on the
source and deletes the target's partial copy; running the command again starts over.
After 5, running it again finds the shard at its target and only finishes step 6.

A logical shard's rows: its users (`id >> 48`), their posts, and what lives with a post
(post_tags, likes, comments: `post_id >> 48`); its users' follows rows that the target
does not already keep for a user of its own (a follow with a user of the target is on the
target already, stored for that user: social.py); the tags its posts name, by name (tag ids
are each database's own).

Catching up compares the two sides (each row's key and the md5 of the row) and applies
the difference, rather than recording changes with triggers or reading them from logical
replication: it needs nothing installed on the databases (no trigger to add and remove,
no replication slot or `wal_level = logical`, which a managed PostgreSQL may refuse),
it repairs a target left in any state by an earlier failed run, and the same comparison
is the verification. It reads the whole shard twice where a change log would read the
changes only: fine for shards of this size (one logical shard is 1/32 of the data), and
step 3 runs once, under the freeze, with step 1 having done the bulk.

The copy writes with the databases' triggers on: they keep each database's counters
(post_counts) right as rows arrive and leave.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from fastpost.db import Database
from fastpost.settings import DatabaseSettings
from fastpost.shards.map_watch import announce, lease_seconds, wait_for_instances
from fastpost.shards.shard_map import (
    FROZEN,
    MOVING,
    READY,
    ShardMap,
    load_shard_map,
    sequence_name,
    set_entry,
)

Say = Callable[[str], None]

# How long the mover waits for every instance to apply a freeze (then it gives up, and
# the shard stays where it is).
ACKNOWLEDGE_WITHIN = 30.0
# Rows written (or deleted) per transaction by the copy, the catch-up and the delete. Each
# post row's triggers update counter rows shared by every shard of its database (post_counts:
# the all-posts row, a tag's row), locked until the transaction commits: in one transaction
# for the whole shard, other shards' new posts on that database waited for all of it
# (benchmarks/bench_shard_move.py showed their p99 at seconds during the copy and the delete).
BATCH_ROWS = 500


@dataclass(frozen=True)
class _Table:
    name: str
    key: tuple[str, ...]
    scope: str  # a condition on the table's rows, with :l the logical shard


_FOLLOWS_SCOPE = (
    "(follower_id >> 48 = :l OR followee_id >> 48 = :l) AND NOT "
    "(follower_id >> 48 = ANY(CAST(:others AS bigint[])) "
    "OR followee_id >> 48 = ANY(CAST(:others AS bigint[])))"
)
# Parents first: the order rows are written in (and deleted in, reversed).
TABLES = (
    _Table("users", ("id",), "id >> 48 = :l"),
    _Table("posts", ("id",), "id >> 48 = :l"),
    _Table("post_tags", ("post_id", "tag"), "post_tags.post_id >> 48 = :l"),
    _Table("likes", ("user_id", "post_id"), "post_id >> 48 = :l"),
    _Table("comments", ("id",), "post_id >> 48 = :l"),
    _Table("follows", ("follower_id", "followee_id"), _FOLLOWS_SCOPE),
)

# post_tags by tag name: the same tag has its own id on each database.
_POST_TAGS_ROWS = (
    "SELECT post_tags.post_id, tags.name AS tag, post_tags.created_at, "
    "md5(ROW(post_tags.post_id, tags.name, post_tags.created_at)::text) AS _digest "
    "FROM post_tags JOIN tags ON tags.id = post_tags.tag_id WHERE "
)
_COLUMNS = text(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
    "AND table_name = :table AND is_generated = 'NEVER' ORDER BY ordinal_position"
)


def _rows_sql(table: _Table, columns: Sequence[str], keys_only: bool) -> str:
    if table.name == "post_tags":
        return _POST_TAGS_ROWS + table.scope
    # The whole row in the digest (generated columns too): a column the copy missed shows.
    shown = ", ".join(table.key if keys_only else columns)
    return (
        f"SELECT {shown}, md5({table.name}::text) AS _digest FROM {table.name} WHERE {table.scope}"
    )


def _summary_sql(table: _Table) -> str:
    """Rows and one checksum of the shard's rows of a table (in digest order: the sides
    need not agree on the rows' physical order)."""
    if table.name == "post_tags":
        inner = _POST_TAGS_ROWS + table.scope
    else:
        inner = f"SELECT md5({table.name}::text) AS _digest FROM {table.name} WHERE {table.scope}"
    return (
        "SELECT count(*), coalesce(md5(string_agg(_digest, '' ORDER BY _digest)), '') "
        f"FROM ({inner}) s"
    )


def _key(row: Mapping[Any, Any], table: _Table) -> tuple[Any, ...]:
    return tuple(row[k] for k in table.key)


async def _columns(conn: AsyncConnection, table: str) -> list[str]:
    return [str(r[0]) for r in (await conn.execute(_COLUMNS, {"table": table})).all()]


def _upsert_sql(table: _Table, columns: Sequence[str]) -> str:
    if table.name == "post_tags":
        return (
            "INSERT INTO post_tags (post_id, tag_id, created_at) "
            "SELECT :post_id, id, :created_at FROM tags WHERE name = :tag "
            "ON CONFLICT (post_id, tag_id) DO UPDATE SET created_at = excluded.created_at"
        )
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    changes = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in table.key)
    return (
        f"INSERT INTO {table.name} ({names}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {changes}"
    )


def _delete_by_keys(table: str, keys: Sequence[str]) -> str:
    return f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = :{k}" for k in keys)


def _delete_sql(table: _Table) -> str:
    if table.name == "post_tags":
        return (
            "DELETE FROM post_tags USING tags WHERE tags.id = post_tags.tag_id "
            "AND post_tags.post_id = :post_id AND tags.name = :tag"
        )
    return _delete_by_keys(table.name, table.key)


Summary = dict[str, tuple[int, str]]


async def _summaries(conn: AsyncConnection, params: dict[str, Any]) -> Summary:
    found: Summary = {}
    for table in TABLES:
        count, checksum = (await conn.execute(text(_summary_sql(table)), params)).one()
        found[table.name] = (int(count), str(checksum))
    return found


async def _sequence(conn: AsyncConnection, logical: int) -> int:
    last = (await conn.execute(text(f"SELECT last_value FROM {sequence_name(logical)}"))).one()
    return int(last[0])


async def synchronise(
    source: Database, target: Database, logical: int, others: list[int]
) -> tuple[int, Summary, Summary]:
    """Make the target's rows of a logical shard those of one snapshot of the source;
    return the rows changed and both sides' summaries (the source's from that snapshot).
    `others`: the logical shards the target hosts (their follows rows are theirs)."""
    params = {"l": logical, "others": others}
    async with source.write_engine.connect() as src:
        src = await src.execution_options(isolation_level="REPEATABLE READ")
        async with src.begin():
            wanted: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
            columns: dict[str, list[str]] = {}
            for table in TABLES:
                columns[table.name] = await _columns(src, table.name)
                rows = await src.execute(text(_rows_sql(table, columns[table.name], False)), params)
                wanted[table.name] = {_key(r, table): r for r in map(dict, rows.mappings())}
            sequence = await _sequence(src, logical)
            source_summary = await _summaries(src, params)
        async with target.write_engine.connect() as dst:
            have: dict[str, dict[tuple[Any, ...], str]] = {}
            for table in TABLES:
                rows = await dst.execute(text(_rows_sql(table, columns[table.name], True)), params)
                have[table.name] = {_key(r, table): r["_digest"] for r in rows.mappings()}
        changed = 0
        for table in reversed(TABLES):
            extra = [
                dict(zip(table.key, k, strict=True))
                for k in have[table.name]
                if k not in wanted[table.name]
            ]
            changed += len(extra)
            await _in_batches(target, _delete_sql(table), extra)
        for table in TABLES:
            rows_to_write = [
                {c: v for c, v in row.items() if c != "_digest"}
                for k, row in wanted[table.name].items()
                if have[table.name].get(k) != row["_digest"]
            ]
            changed += len(rows_to_write)
            if table.name == "post_tags":
                tags = [{"tag": t} for t in sorted({r["tag"] for r in rows_to_write})]
                await _in_batches(
                    target, "INSERT INTO tags (name) VALUES (:tag) ON CONFLICT DO NOTHING", tags
                )
            await _in_batches(target, _upsert_sql(table, columns[table.name]), rows_to_write)
        async with target.write_engine.begin() as dst:
            # Past the source's position: ids the source has handed out are never reused.
            name = sequence_name(logical)
            await dst.execute(
                text(f"SELECT setval('{name}', greatest(:last, (SELECT last_value FROM {name})))"),
                {"last": sequence},
            )
        async with target.write_engine.connect() as dst:
            target_summary = await _summaries(dst, params)
    return changed, source_summary, target_summary


async def delete_logical(db: Database, logical: int, others: list[int]) -> int:
    """Delete a logical shard's rows from a database (children first); `others`: the
    logical shards it keeps, whose follows rows stay. Return the rows deleted."""
    params = {"l": logical, "others": others}
    deleted = 0
    for table in reversed(TABLES):
        # The keys first, then the rows by key, a batch per transaction (_in_batches);
        # post_tags by tag id here: the tags themselves stay, shared by the shards.
        keys = ("post_id", "tag_id") if table.name == "post_tags" else table.key
        async with db.write_engine.connect() as conn:
            found = await conn.execute(
                text(f"SELECT {', '.join(keys)} FROM {table.name} WHERE {table.scope}"), params
            )
            rows = [dict(row) for row in found.mappings()]
        await _in_batches(db, _delete_by_keys(table.name, keys), rows)
        deleted += len(rows)
    return deleted


async def _in_batches(db: Database, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run `sql` once per row, BATCH_ROWS rows per transaction."""
    for start in range(0, len(rows), BATCH_ROWS):
        async with db.write_engine.begin() as conn:
            await conn.execute(text(sql), list(rows[start : start + BATCH_ROWS]))


class MoveFailed(RuntimeError):
    pass


async def move_shard(
    settings: DatabaseSettings,
    logical: int,
    target_index: int,
    *,
    redis_url: str | None = None,
    say: Say = print,
) -> None:
    """Move one logical shard to the database of index `target_index` (the steps above)."""
    physical = len(settings.shards)
    if not 0 <= target_index < physical:
        raise MoveFailed(f"no database {target_index}: FASTPOST_DB__SHARDS has {physical}")
    databases = [Database(settings.for_shard(url)) for url in settings.shards]
    directory = databases[0]
    lease = lease_seconds(settings.shard_map_check_seconds)
    try:
        shard_map = await load_shard_map(directory, physical)
        source_index = shard_map.databases[logical]
        if source_index == target_index:
            # Done before, or a run that stopped after the switch: finish its last step.
            if shard_map.states[logical] != READY:
                await set_entry(directory, logical, target_index, READY)
                await announce(redis_url)
            for index, db in enumerate(databases):
                if index != target_index:
                    leftover = await delete_logical(db, logical, _hosted(shard_map, index))
                    if leftover:
                        say(f"deleted {leftover} rows left on database {index}")
            say(f"logical shard {logical} is on database {target_index}")
            return
        source, target = databases[source_index], databases[target_index]
        others = _hosted(shard_map, target_index)
        say(f"moving logical shard {logical}: database {source_index} -> {target_index}")
        started = time.monotonic()
        switched = False
        try:
            await set_entry(directory, logical, source_index, MOVING)
            await announce(redis_url)
            changed, _, _ = await synchronise(source, target, logical, others)
            say(f"copy: {changed} rows written to database {target_index}")
            version = await set_entry(directory, logical, source_index, FROZEN)
            await announce(redis_url)
            frozen_at = time.monotonic()
            await wait_for_instances(
                directory,
                logical=logical,
                version=version,
                lease=lease,
                within=ACKNOWLEDGE_WITHIN,
            )
            say("freeze: writes to the shard wait; every instance has drained its writes")
            changed, on_source, on_target = await synchronise(source, target, logical, others)
            say(f"catch up: {changed} rows changed since the copy")
            for name, (rows, checksum) in on_source.items():
                if on_target[name] != (rows, checksum):
                    raise MoveFailed(
                        f"{name}: {rows} rows ({checksum}) on database {source_index}, "
                        f"{on_target[name][0]} ({on_target[name][1]}) on {target_index}"
                    )
            say(
                "verify: "
                + ", ".join(f"{name} {rows}" for name, (rows, _) in on_source.items())
                + " rows, checksums equal"
            )
            version = await set_entry(directory, logical, target_index, READY)
            switched = True
            await announce(redis_url)
            say(
                f"switch: the map names database {target_index} "
                f"(writes waited {time.monotonic() - frozen_at:.2f} s)"
            )
        except BaseException:
            if not switched:
                await set_entry(directory, logical, source_index, READY)
                await announce(redis_url)
                outcome = "its partial copy deleted"
                try:
                    await delete_logical(target, logical, others)
                except Exception as exc:
                    # A target not prepared (`shards init`), or gone: the next run's copy
                    # makes whatever is there equal to the source anyway.
                    outcome = f"its partial copy not deleted ({exc.__class__.__name__})"
                say(f"failed: logical shard {logical} stays on database {source_index}, {outcome}")
            raise
        try:
            # The instances that still read from the old copy switch within the lease.
            await wait_for_instances(
                directory, logical=logical, version=version, lease=lease, within=lease * 2
            )
        except TimeoutError as exc:
            say(f"note: {exc}; deleting all the same")
        after = await load_shard_map(directory, physical)
        deleted = await delete_logical(source, logical, _hosted(after, source_index))
        say(
            f"delete: {deleted} rows removed from database {source_index} "
            f"(moved in {time.monotonic() - started:.2f} s)"
        )
    finally:
        for db in databases:
            await db.dispose()


def _hosted(shard_map: ShardMap, index: int) -> list[int]:
    return shard_map.logical_shards_of(index)


def next_rebalance_move(shard_map: ShardMap, physical: int) -> tuple[int, int] | None:
    """The next move towards an equal share per database (± 1): the highest logical shard
    of the fullest database to the emptiest; None when balanced."""
    counts = [len(shard_map.logical_shards_of(index)) for index in range(physical)]
    fullest = max(range(physical), key=lambda index: (counts[index], -index))
    emptiest = min(range(physical), key=lambda index: (counts[index], index))
    if counts[fullest] - counts[emptiest] <= 1:
        return None
    return max(shard_map.logical_shards_of(fullest)), emptiest


async def rebalance(
    settings: DatabaseSettings, *, redis_url: str | None = None, say: Say = print
) -> int:
    """Move logical shards, one at a time, until every database holds an equal share
    (± 1); return the number of moves."""
    physical = len(settings.shards)
    moves = 0
    while True:
        directory = Database(settings.for_shard(settings.shards[0]))
        try:
            shard_map = await load_shard_map(directory, physical)
        finally:
            await directory.dispose()
        step = next_rebalance_move(shard_map, physical)
        if step is None:
            counts = [len(shard_map.logical_shards_of(i)) for i in range(physical)]
            say(f"balanced: logical shards per database {counts}")
            return moves
        await move_shard(settings, step[0], step[1], redis_url=redis_url, say=say)
        moves += 1
