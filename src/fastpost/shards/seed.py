"""`fastpost seed` in sharded mode: the unsharded seed's rows (fastpost.seed), renumbered
and sent to the database of each row's logical shard.

The generator makes the same users, posts, tags, likes and follows as for one database,
numbered 1, 2, ...; here each user takes an id from the logical shard their name hashes to
(as a registration does), each post from its author's, and every row goes where sharded
mode reads it: posts, their tags and likes with the post, a follow on both users'
databases, each user's name in the directory. Rows go in by INSERT ... SELECT FROM unnest
(5,000 a statement), so post_counts' triggers keep the counters. All rows are held in
memory first: for the sizes a development set uses, not the millions the unsharded bulk
load (COPY) is built for.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from fastpost.db import Database
from fastpost.posts.slugs import sharded_suffix
from fastpost.seed import Progress, RowGenerator, SeedPlan, SeedReport, password_hashes, tag_names
from fastpost.settings import Settings
from fastpost.shards.shard_map import (
    LOGICAL_SHARDS,
    ShardMap,
    load_shard_map,
    logical_shard_for_username,
    sequence_name,
)

CHUNK = 5000

_INSERTS = {
    "users": (
        "INSERT INTO users (id, username, email, password_hash, bio, image, is_active, "
        "created_at, updated_at) SELECT * FROM unnest(CAST(:c0 AS bigint[]), "
        "CAST(:c1 AS text[]), CAST(:c2 AS text[]), CAST(:c3 AS text[]), CAST(:c4 AS text[]), "
        "CAST(:c5 AS text[]), CAST(:c6 AS boolean[]), CAST(:c7 AS timestamptz[]), "
        "CAST(:c8 AS timestamptz[]))"
    ),
    "posts": (
        "INSERT INTO posts (id, author_id, title, slug, content, status, likes_count, "
        "created_at, updated_at) SELECT * FROM unnest(CAST(:c0 AS bigint[]), "
        "CAST(:c1 AS bigint[]), CAST(:c2 AS text[]), CAST(:c3 AS text[]), CAST(:c4 AS text[]), "
        "CAST(:c5 AS text[]), CAST(:c6 AS integer[]), CAST(:c7 AS timestamptz[]), "
        "CAST(:c8 AS timestamptz[]))"
    ),
    "post_tags": (
        "INSERT INTO post_tags (post_id, tag_id, created_at) SELECT * FROM unnest("
        "CAST(:c0 AS bigint[]), CAST(:c1 AS bigint[]), CAST(:c2 AS timestamptz[]))"
    ),
    "likes": (
        "INSERT INTO likes (user_id, post_id, created_at) SELECT * FROM unnest("
        "CAST(:c0 AS bigint[]), CAST(:c1 AS bigint[]), CAST(:c2 AS timestamptz[]))"
    ),
    "follows": (
        "INSERT INTO follows (follower_id, followee_id, created_at) SELECT * FROM unnest("
        "CAST(:c0 AS bigint[]), CAST(:c1 AS bigint[]), CAST(:c2 AS timestamptz[])) "
        "ON CONFLICT DO NOTHING"
    ),
    "user_directory": (
        "INSERT INTO user_directory (username_lower, email, user_id) SELECT * FROM unnest("
        "CAST(:c0 AS text[]), CAST(:c1 AS text[]), CAST(:c2 AS bigint[]))"
    ),
}


def _time(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


async def _insert(db: Database, table: str, rows: Sequence[Sequence[Any]]) -> None:
    statement = text(_INSERTS[table])
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        columns = {f"c{n}": [row[n] for row in chunk] for n in range(len(chunk[0]))}
        async with db.transaction() as session:
            await session.execute(statement, columns)


async def _new_ids(db: Database, logical: int, count: int) -> list[int]:
    if not count:
        return []
    async with db.reader() as conn:
        found = await conn.execute(
            text(f"SELECT nextval('{sequence_name(logical)}') FROM generate_series(1, :n)"),
            {"n": count},
        )
        return [int(row[0]) for row in found.all()]


async def seed_shards(settings: Settings, plan: SeedPlan, progress: Progress) -> SeedReport:
    """Load the plan's rows into every database of FASTPOST_DB__SHARDS."""
    started = time.perf_counter()
    report = SeedReport()
    databases = [Database(settings.db.for_shard(url)) for url in settings.db.shards]
    try:
        shard_map = await load_shard_map(databases[0], len(databases))
        names = tag_names(plan)
        gen = RowGenerator(plan, 1, 1, with_demo_user=True, tag_ids=list(range(1, len(names) + 1)))
        users = list(gen.users(*password_hashes(settings)))
        posts = list(gen.posts())
        post_tags = list(gen.post_tags())
        likes = list(gen.likes())
        follows = list(gen.follows())
        await _load(databases, shard_map, names, users, posts, post_tags, likes, follows, progress)
        report.counts = {
            "users": len(users),
            "posts": len(posts),
            "post_tags": len(post_tags),
            "likes": len(likes),
            "follows": len(follows),
        }
    finally:
        for db in databases:
            await db.dispose()
    report.seconds = time.perf_counter() - started
    return report


async def _load(
    databases: list[Database],
    shard_map: ShardMap,
    names: list[str],
    users: list[Any],
    posts: list[Any],
    post_tags: list[Any],
    likes: list[Any],
    follows: list[Any],
    progress: Progress,
) -> None:
    def db_of(new_id: int) -> int:
        return shard_map.database_of(new_id)

    # Users: ids from the logical shard each name hashes to, as a registration's.
    by_logical: dict[int, list[int]] = defaultdict(list)
    for n, row in enumerate(users):
        by_logical[logical_shard_for_username(row[1])].append(n)
    user_id: dict[int, int] = {}
    for logical in range(LOGICAL_SHARDS):
        members = by_logical.get(logical, [])
        db = databases[shard_map.databases[logical]]
        for n, new in zip(members, await _new_ids(db, logical, len(members)), strict=True):
            user_id[users[n][0]] = new
    # Posts: ids from their author's logical shard.
    post_by_logical: dict[int, list[int]] = defaultdict(list)
    for n, row in enumerate(posts):
        post_by_logical[user_id[row[1]] >> 48].append(n)
    post_id: dict[int, int] = {}
    for logical, members in post_by_logical.items():
        db = databases[shard_map.databases[logical]]
        for n, new in zip(members, await _new_ids(db, logical, len(members)), strict=True):
            post_id[posts[n][0]] = new
    # Tags: each database names its own.
    tag_ids: list[dict[int, int]] = []
    for db in databases:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO tags (name) SELECT unnest(CAST(:names AS text[])) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"names": names},
            )
            found = await session.execute(text("SELECT name, id FROM tags"))
            by_name = {name: int(tag) for name, tag in found.all()}
        tag_ids.append({n + 1: by_name[name] for n, name in enumerate(names)})

    rows: dict[str, list[list[Any]]] = {}
    for table in ("users", "posts", "post_tags", "likes", "follows"):
        rows[table] = [[] for _ in databases]
    directory: list[Any] = []
    for u in users:
        new = user_id[u[0]]
        rows["users"][db_of(new)].append((new, *u[1:7], _time(u[7]), _time(u[8])))
        directory.append((u[1].lower(), u[2], new))
    for p in posts:
        new = post_id[p[0]]
        # The unsharded slug (unique by the old id) with the suffix that routes a RealWorld
        # read by slug to the post's logical shard (fastpost.posts.slugs).
        slug = f"{p[3]}-{sharded_suffix(new >> 48)}"
        rows["posts"][db_of(new)].append(
            (new, user_id[p[1]], p[2], slug, *p[4:7], _time(p[7]), _time(p[8]))
        )
    for post, tag, created in post_tags:
        new = post_id[post]
        home = db_of(new)
        rows["post_tags"][home].append((new, tag_ids[home][tag], _time(created)))
    for user, post, at in likes:
        new = post_id[post]
        rows["likes"][db_of(new)].append((user_id[user], new, _time(at)))
    for follower, followee, since in follows:
        pair = (user_id[follower], user_id[followee], _time(since))
        for home in {db_of(pair[0]), db_of(pair[1])}:
            rows["follows"][home].append(pair)
    await _insert(databases[0], "user_directory", directory)
    for table in ("users", "posts", "post_tags", "likes", "follows"):
        for db, table_rows in zip(databases, rows[table], strict=True):
            if table_rows:
                await _insert(db, table, table_rows)
        progress(table, sum(len(r) for r in rows[table]))
    for db in databases:
        # As the unsharded seed ends (fastpost.seed): statistics for the planner, and a
        # visibility map for index-only scans, without waiting for autovacuum.
        async with db.write_engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(
                "VACUUM (ANALYZE) users, posts, tags, post_tags, likes, follows, post_counts"
            )
