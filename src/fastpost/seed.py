"""Deterministic demo and benchmark data, loaded in bulk.

Rows are generated lazily and streamed to the database in one transaction, so memory stays
flat whatever the count (but for post_tags and likes on PostgreSQL, held encoded ahead at
38 bytes a row, see _EncodedAhead) and a failed run leaves nothing behind:
- PostgreSQL: binary COPY through asyncpg, one COPY per table. The generator runs in this
  process while the server parses and stores on the other core.
- SQLite: `executemany` in batches through the standard sqlite3 module, inside one
  `BEGIN IMMEDIATE` transaction; the FTS5 triggers index each post as it lands.

Ids are reserved up front as a contiguous block of the table's own sequence, so that likes
and follows can point at posts and users without reading them back.

Where the PostgreSQL time goes (`perf` on the backend running the COPY): the server is the
bottleneck, not Python. Loading posts with every index in place, over half of the backend's
time went to `to_tsvector` for the generated `search_vector` column, a third to index upkeep
(GIN and btree about alike), and each COPY into posts and likes then fired one foreign-key
trigger per row. So when a load outnumbers the rows already in a table, its
secondary indexes, keys nothing points at, and foreign keys are taken off inside the
transaction and put back after the COPY from definitions read out of the catalog (the
migrations stay the one place they are written): one sorted build per index and one join
per foreign key instead of millions of single-row updates. 1M posts, 2M likes and 10k
users then loaded in about half the time (paired runs; `fastpost seed` prints each table's
seconds). What remains is mostly `to_tsvector`: posts COPY about twenty times faster into
an index-free copy of the table without the generated column than into posts, work that no
client can take over (a generated column can't be supplied) and only the one backend of our
transaction computes.

Measurements of that backend's CPU time since (1M posts, the CLI's other defaults): a
server-side COPY of the same rows into a copy of posts without its primary key costs it
nearly all that the posts COPY does, and `SELECT to_tsvector(...)` over them alone most of
it. So the work is PostgreSQL's, in one process: PostgreSQL 15 neither inserts nor builds
a GIN index in parallel, and a second connection would be a second transaction (a default
server has no prepared transactions to commit both at once). What this process still did
while the server waited is gone:
- post_counts: the generator counts what the disabled triggers would have added, instead
  of a DELETE and one aggregate per kind over the whole tables (seconds of the server's
  time at a million posts).
- likes come from the counts posts() noted, instead of a second draw for every post (for
  10,000 likes over a million posts, a second or two of this process's time, the server
  idle).
- post_tags and likes are encoded for a binary COPY by a thread while the posts stream, so
  their COPYs go at the server's pace (1.5M tags in about half the time).
Left as they were: the index rebuilds (under half of their time the GIN index on
search_vector) took as long with `maintenance_work_mem` and `work_mem` raised to 256 MB for
the transaction, in paired runs; COPY FREEZE (into tables emptied in the same transaction)
saved a few percent of the posts COPY in a server-side test, and asyncpg's record COPY has
no option for it.
`tests/test_seed.py` holds the counters to a full recount.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import struct
import threading
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from math import log
from typing import Any

from sqlalchemy.engine import make_url

from fastpost.posts.counts import PG_TRIGGERS
from fastpost.security import Passwords
from fastpost.settings import Settings

DEMO_USERNAME = "testuser"
DEMO_PASSWORD = "testpass"
# Every other generated account shares this password, so load tests can log in as anyone.
GENERATED_PASSWORD = "password"

DRAFT_SHARE = 0.05
MAX_TAGS_PER_POST = 3
HISTORY = timedelta(days=365)

# Timestamps are generated as integer microseconds since the Unix epoch (UTC) and put in
# each driver's form at the edge: a COPY of (bigint, bigint, timestamptz) rows costs this
# process about five times the CPU with datetime values as with integers through a tuple
# codec (asyncpg 0.32; time.process_time around the likes' COPY with either shows it), and
# a seed sends one or two timestamps per row.
_SECOND = 1_000_000
_DAY = 86_400 * _SECOND
_UNIX_EPOCH = datetime(1970, 1, 1)
# PostgreSQL counts microseconds from 2000-01-01 UTC.
_PG_EPOCH_OFFSET = (datetime(2000, 1, 1) - _UNIX_EPOCH) // timedelta(microseconds=1)

_WORDS = [
    "async",
    "await",
    "latency",
    "throughput",
    "cache",
    "index",
    "query",
    "pool",
    "worker",
    "replica",
    "shard",
    "redis",
    "postgres",
    "sqlite",
    "python",
    "fastapi",
    "uvicorn",
    "starlette",
    "pydantic",
    "sqlalchemy",
    "metrics",
    "tracing",
    "profile",
    "benchmark",
    "request",
    "response",
    "header",
    "cursor",
    "page",
    "keyset",
    "offset",
    "scan",
    "plan",
    "vacuum",
    "lock",
    "commit",
    "rollback",
    "transaction",
    "isolation",
    "event",
    "loop",
    "thread",
    "process",
    "memory",
    "cpu",
    "core",
    "kernel",
    "socket",
    "buffer",
    "stream",
    "batch",
    "copy",
    "insert",
    "update",
    "delete",
    "select",
    "join",
    "filter",
    "sort",
    "limit",
    "count",
    "rank",
    "search",
    "token",
    "session",
    "cookie",
    "login",
    "user",
    "post",
    "follow",
    "friend",
    "like",
    "feed",
    "timeline",
    "story",
    "garden",
    "coffee",
    "mountain",
    "river",
    "winter",
    "summer",
    "travel",
    "recipe",
    "music",
    "photo",
    "city",
    "night",
    "morning",
    "weekend",
    "project",
    "idea",
    "design",
    "review",
    "release",
    "deploy",
    "rollback",
    "alert",
    "dashboard",
    "capacity",
    "budget",
    "target",
    "percentile",
    "tail",
    "jitter",
    "backoff",
    "retry",
    "timeout",
    "circuit",
]

_FIRST_NAMES = [
    "ada",
    "alan",
    "grace",
    "linus",
    "guido",
    "barbara",
    "ken",
    "dennis",
    "margaret",
    "edsger",
    "donald",
    "john",
    "tim",
    "katherine",
    "radia",
    "frances",
    "hedy",
    "annie",
    "sophie",
    "lise",
    "marie",
    "emmy",
    "rosalind",
    "niklaus",
    "bjarne",
    "james",
    "brian",
]


@dataclass(frozen=True)
class SeedPlan:
    users: int = 300
    posts: int = 3000
    follows: int = 3000
    likes: int = 10000
    # Distinct tag names (at most len(_WORDS)); each post carries 0 to MAX_TAGS_PER_POST.
    tags: int = 20
    seed: int = 42


@dataclass
class SeedReport:
    counts: dict[str, int] = field(default_factory=dict)
    # Wall time per table's load and for putting indexes back, in the order they ran.
    phases: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# (table, rows just written); for "indexes", (phase, indexes and constraints just rebuilt).
Progress = Callable[[str, int], None]
Row = tuple[Any, ...]

# Tables in load order: referenced tables first.
TABLES = ("users", "posts", "post_tags", "likes", "follows")
_COLUMNS = {
    "users": (
        "id",
        "username",
        "email",
        "password_hash",
        "bio",
        "image",
        "is_active",
        "created_at",
        "updated_at",
    ),
    "posts": (
        "id",
        "author_id",
        "title",
        "slug",
        "content",
        "status",
        "likes_count",
        "created_at",
        "updated_at",
    ),
    "post_tags": ("post_id", "tag_id", "created_at"),
    "likes": ("user_id", "post_id", "created_at"),
    "follows": ("follower_id", "followee_id", "created_at"),
}


def _sentences(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(8, 16))
        out.append(" ".join(words).capitalize() + ".")
    return out


def _spread(rng: random.Random, total: int, slots: int, cap: int) -> Iterator[int]:
    """Share `total` items among `slots` slots, at most `cap` each: skewed (a few popular
    slots, a long tail) but self-correcting, so the sum is `total` whenever
    `slots * cap` can hold it."""
    random_ = rng.random
    remaining = total
    for left in range(slots, 0, -1):
        if left == 1:
            k = min(remaining, cap)
        else:
            # An exponential draw around the mean of what is left, dithered before
            # truncation so small means still average out right. Inlined rather than
            # rng.expovariate: this runs once per post, twice per seed.
            mean = remaining / left
            k = min(int(-log(1.0 - random_()) * mean + random_()), remaining, cap)
            # What the slots after this one can't hold must go here: a dense plan (all
            # possible follows among a few users) still lands on its total.
            k = max(k, min(remaining - (left - 1) * cap, cap))
        remaining -= k
        yield k


def _distinct(rng: random.Random, k: int, n: int) -> Iterable[int]:
    """`k` distinct offsets drawn uniformly from range(n), in draw order."""
    if k * 4 > n:
        return rng.sample(range(n), k)
    # Most posts have a handful of likers among thousands of users: redrawing the rare
    # repeat takes about a third of rng.sample's time for k = 1 to 5 (python -m timeit of
    # the two, drawing among 10,000 users).
    random_ = rng.random
    picked: dict[int, None] = {}
    while len(picked) < k:
        picked[int(random_() * n)] = None
    return picked


class RowGenerator:
    """Rows for each table, generated on demand from the plan's seed.

    Each table draws from its own random stream, so that its rows don't depend on how
    another table's were consumed. Timestamps are integer microseconds since the Unix epoch.
    Generating 1M posts and 2M likes takes about 11 s of this process's CPU, so the server,
    not this loop, sets the pace of a PostgreSQL seed.

    posts() notes each post's like count and whether it is published (5 bytes a post), which
    post_tags() and likes() read, and `counts` adds up the published posts per list filter
    as post_counts keeps them (migration 0002), so that PostgreSQL gets its counters from
    here instead of from a recount of every table. post_tags() and likes() may run in
    another thread while posts() is still being consumed: they wait for the posts they need.
    """

    def __init__(
        self,
        plan: SeedPlan,
        first_user_id: int,
        first_post_id: int,
        *,
        with_demo_user: bool,
        tag_ids: list[int],
    ) -> None:
        self.plan = plan
        self.tag_ids = tag_ids
        self.with_demo_user = with_demo_user
        self.first_user_id = first_user_id
        self.first_post_id = first_post_id
        self.now = int(datetime.now(UTC).timestamp()) * _SECOND
        self.history = HISTORY // timedelta(microseconds=1)
        self.user_ids = range(first_user_id, first_user_id + plan.users)
        # Filled by posts(), by post offset.
        self.like_counts = array("I")
        self.published = bytearray()
        # (kind, ref_id) -> published posts this seed adds to that list (post_counts' rows).
        self.counts: Counter[tuple[str, int]] = Counter()
        self.posts_done = threading.Event()
        # Set to make a post_tags() or likes() waiting in another thread give up.
        self.cancelled = threading.Event()

    def _wait_for_posts(self, count: int) -> None:
        """Return once posts() has generated `count` posts (or all of them)."""
        while len(self.published) < count and not self.posts_done.is_set():
            if self.cancelled.is_set():
                raise RuntimeError("seed cancelled")
            # Posts are made as fast as PostgreSQL takes them (tens of microseconds each,
            # by the seconds `fastpost seed` prints for posts): a short nap lets a hundred
            # or more pile up.
            time.sleep(0.005)
        if len(self.published) < count:
            raise RuntimeError("posts() must be consumed before the tables that follow it")

    def _like_counts(self) -> Iterator[int]:
        # Its own random stream, so that the posts' other columns don't depend on the plan's
        # likes; posts() notes each count, which likes() then fills with as many rows.
        rng = random.Random(self.plan.seed * 1_000_003 + 2)
        return _spread(rng, self.plan.likes, self.plan.posts, self.plan.users)

    def users(self, demo_hash: str, shared_hash: str) -> Iterator[Row]:
        rng = random.Random(self.plan.seed)
        joined = self.now - self.history - _DAY
        for n, user_id in enumerate(self.user_ids):
            if n == 0 and self.with_demo_user:
                username, password_hash = DEMO_USERNAME, demo_hash
            else:
                username, password_hash = f"{rng.choice(_FIRST_NAMES)}{user_id}", shared_hash
            bio = f"{username} writes about {' and '.join(rng.sample(_WORDS, 2))}."
            yield (
                user_id,
                username,
                f"{username}@example.com",
                password_hash,
                bio,
                None,
                True,
                joined,
                joined,
            )

    def _post_times(self) -> Iterator[tuple[int, int]]:
        """(id, created_at) of each planned post, oldest first, evenly over the history:
        the one timeline that posts, their tags and their likes share."""
        step = self.history // max(self.plan.posts, 1)
        ids = range(self.first_post_id, self.first_post_id + self.plan.posts)
        return zip(ids, itertools.count(self.now - self.history, step), strict=False)

    def posts(self) -> Iterator[Row]:
        plan = self.plan
        rng = random.Random(plan.seed + 1)
        random_ = rng.random
        sentences = _sentences(rng, 2000)
        n_sentences = len(sentences)
        words = _WORDS
        n_words = len(words)
        # Authors follow a power law: a few prolific writers, many occasional ones.
        authors = list(self.user_ids)
        rng.shuffle(authors)
        cum_weights = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(plan.users)))
        times = self._post_times()
        like_counts = self._like_counts()
        noted_likes = self.like_counts
        published = self.published
        authored: Counter[int] = Counter()
        batch = 4096
        for base in range(0, plan.posts, batch):
            chosen = rng.choices(authors, cum_weights=cum_weights, k=min(batch, plan.posts - base))
            for author_id in chosen:
                post_id, created = next(times)
                # Indexing with random() rather than rng.choices/randint: about a third
                # less time per title (python -m timeit of the two).
                title = " ".join(
                    [words[int(random_() * n_words)] for _ in range(3 + int(random_() * 6))]
                ).capitalize()
                content = (
                    f"{sentences[int(random_() * n_sentences)]} "
                    f"{sentences[int(random_() * n_sentences)]} "
                    f"{sentences[int(random_() * n_sentences)]}"
                )
                is_draft = random_() < DRAFT_SHARE
                published.append(not is_draft)
                if not is_draft:
                    authored[author_id] += 1
                likes = next(like_counts)
                noted_likes.append(likes)
                # The words are lower-case ASCII, so this is slugify(title), without its cost;
                # the id (not random bits, as for posts made by the API) keeps it unique.
                slug = f"{title.lower().replace(' ', '-')}-{post_id}"
                yield (
                    post_id,
                    author_id,
                    title,
                    slug,
                    content,
                    "draft" if is_draft else "published",
                    likes,
                    created,
                    created,
                )
        self.counts["a", 0] += sum(authored.values())
        self.counts.update({("u", author): n for author, n in authored.items()})
        self.posts_done.set()

    def post_tags(self) -> Iterator[Row]:
        tag_ids = self.tag_ids
        if not tag_ids:
            return
        rng = random.Random(self.plan.seed + 5)
        random_ = rng.random
        most = min(MAX_TAGS_PER_POST, len(tag_ids))
        published = self.published
        tagged: Counter[int] = Counter()
        # Each row carries its post's created_at (migration 0003).
        for n, (post_id, created) in enumerate(self._post_times()):
            if n >= len(published):
                self._wait_for_posts(n + 1)
            k = int(random_() * (most + 1))
            for offset in _distinct(rng, k, len(tag_ids)) if k else ():
                tag_id = tag_ids[offset]
                if published[n]:
                    tagged[tag_id] += 1
                yield (post_id, tag_id, created)
        self.counts.update({("t", tag): n for tag, n in tagged.items()})

    def likes(self) -> Iterator[Row]:
        plan = self.plan
        rng = random.Random(plan.seed + 3)
        first_user = self.first_user_id
        if not plan.likes:
            return  # rather than walking a zero for every post
        self._wait_for_posts(plan.posts)
        published = self.published
        liked: Counter[int] = Counter()
        first_post, step = self.first_post_id, self.history // max(plan.posts, 1)
        start = self.now - self.history
        # Only the posts someone liked: with 10,000 likes over a million posts, walking every
        # post's count was most of this table's time.
        for n in itertools.compress(range(plan.posts), self.like_counts):
            k = self.like_counts[n]
            post_id, liked_at = first_post + n, start + n * step + _SECOND
            for offset in _distinct(rng, k, plan.users):
                user_id = first_user + offset
                if published[n]:
                    liked[user_id] += 1
                yield (user_id, post_id, liked_at)
        self.counts.update({("f", user): n for user, n in liked.items()})

    def follows(self) -> Iterator[Row]:
        plan = self.plan
        rng = random.Random(plan.seed + 4)
        since = self.now - self.history
        first_user = self.first_user_id
        others = plan.users - 1
        counts = _spread(rng, plan.follows, plan.users, max(others, 0))
        for me, k in enumerate(counts):
            # Offsets among the other users: skipping over one's own slot makes a
            # self-follow impossible rather than filtered out.
            for offset in _distinct(rng, k, others) if k else ():
                yield (first_user + me, first_user + offset + (offset >= me), since)


def _counting(
    rows: Iterator[Row], table: str, progress: Progress, every: int = 10_000
) -> Iterator[Row]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if n == every:
            progress(table, n)
            n = 0
    if n:
        progress(table, n)


def _rows(gen: RowGenerator, table: str, hashes: tuple[str, str]) -> Iterator[Row]:
    if table == "users":
        return gen.users(*hashes)
    if table == "posts":
        return gen.posts()
    if table == "post_tags":
        return gen.post_tags()
    if table == "likes":
        return gen.likes()
    return gen.follows()


def tag_names(plan: SeedPlan) -> list[str]:
    """The plan's tag vocabulary: the first `plan.tags` distinct words, sorted."""
    return sorted(dict.fromkeys(_WORDS))[: plan.tags]


def password_hashes(settings: Settings) -> tuple[str, str]:
    """The hashes of the demo user's password and of every generated user's."""
    passwords = Passwords(settings)
    return passwords.hash_sync(DEMO_PASSWORD), passwords.hash_sync(GENERATED_PASSWORD)


# What comes off a table for a bulk load, as (drop, restore) statements rendered from the
# catalog. Kept on: primary and unique keys that a foreign key points at (users.id,
# posts.id): the foreign keys need them, and the new ids arrive in ascending order, which a
# btree appends at little cost. CHECK constraints are cheap per row and stay too.
_DEFERRABLE_SQL = """
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
       format('ALTER TABLE %s ADD CONSTRAINT %I %s',
              c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)),
       c.contype = 'f'
FROM pg_constraint AS c
WHERE c.conrelid = $1::regclass
  AND (c.contype = 'f'
       OR (c.contype IN ('p', 'u') AND NOT EXISTS (
             SELECT 1 FROM pg_constraint AS f
             WHERE f.contype = 'f' AND f.conindid = c.conindid)))
UNION ALL
SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid), false
FROM pg_index AS i
WHERE i.indrelid = $1::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
"""


async def _defer_indexes(conn: Any, table: str) -> tuple[list[str], list[str]]:
    """Drop `table`'s deferrable indexes and foreign keys; return the statements that put
    them back, keys and indexes first and foreign keys last (in that order)."""
    rows = await conn.fetch(_DEFERRABLE_SQL, table)
    for drop, _, _ in rows:
        await conn.execute(drop)
    keys_and_indexes = [restore for _, restore, is_fk in rows if not is_fk]
    foreign_keys = [restore for _, restore, is_fk in rows if is_fk]
    return keys_and_indexes, foreign_keys


async def _outnumbers(conn: Any, table: str, incoming: int) -> bool:
    """True when `incoming` rows are more than `table` holds. Rebuilding an index reads
    the existing rows again, so it pays only for a load that is large next to them; at
    least doubling the table is a conservative line, not a measured break-even. Counting
    stops at `incoming`, so the check costs at most a scan of as many rows as the load."""
    if not incoming:
        return False
    existing = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT FROM {table} LIMIT $1) AS existing", incoming
    )
    return int(existing) < incoming


async def _seed_postgres(
    settings: Settings, plan: SeedPlan, progress: Progress, report: SeedReport
) -> None:
    import asyncpg

    url = make_url(settings.db.url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    hashes = await asyncio.to_thread(password_hashes, settings)
    try:
        await conn.set_type_codec(
            "timestamptz",
            schema="pg_catalog",
            encoder=_to_pg_timestamp,
            decoder=_from_pg_timestamp,
            format="tuple",
        )
        async with conn.transaction():
            # Nobody else inserts while the id blocks are reserved and filled.
            await conn.execute("LOCK TABLE users, posts IN SHARE ROW EXCLUSIVE MODE")
            # A crash loses nothing that matters in a seed that runs as one transaction.
            await conn.execute("SET LOCAL synchronous_commit = off")
            first_user = await _reserve_pg(conn, "users", plan.users)
            first_post = await _reserve_pg(conn, "posts", plan.posts)
            demo_missing = not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)", DEMO_USERNAME
            )
            # Dropping an index locks its table against readers until commit: the price
            # of a large load, paid only when the load outnumbers what is there.
            # Tags already there (an earlier seed, or the API) are reused by name.
            names = tag_names(plan)
            await conn.executemany(
                "INSERT INTO tags (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                [(name,) for name in names],
            )
            tag_ids = [
                row["id"]
                for row in await conn.fetch(
                    "SELECT id FROM tags WHERE name = any($1::text[]) ORDER BY name", names
                )
            ]
            planned = {
                "users": plan.users,
                "posts": plan.posts,
                "post_tags": plan.posts * min(MAX_TAGS_PER_POST, len(tag_ids)) // 2,
                "likes": plan.likes,
                "follows": plan.follows,
            }
            rebuild: list[str] = []
            relink: list[str] = []
            for table in TABLES:
                if await _outnumbers(conn, table, planned[table]):
                    keys_and_indexes, foreign_keys = await _defer_indexes(conn, table)
                    rebuild += keys_and_indexes
                    relink += foreign_keys
            # The generator counts what they would have added (see fastpost.posts.counts);
            # like the index drops, undone by a rollback.
            for table, trigger in PG_TRIGGERS:
                await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
            gen = RowGenerator(
                plan, first_user, first_post, with_demo_user=demo_missing, tag_ids=tag_ids
            )
            ahead = _EncodedAhead(gen, progress)
            try:
                for table in TABLES:
                    started = time.perf_counter()
                    if table in _LINK_TABLES:
                        result = await conn.copy_to_table(
                            table,
                            source=_chunks(await ahead.encoded(table)),
                            columns=_COLUMNS[table],
                            format="binary",
                        )
                    else:
                        rows = _counting(_rows(gen, table, hashes), table, progress)
                        result = await conn.copy_records_to_table(
                            table, records=rows, columns=_COLUMNS[table]
                        )
                    report.counts[table] = int(result.split()[-1])
                    report.phases[table] = time.perf_counter() - started
            finally:
                ahead.stop()
            started = time.perf_counter()
            # Unique and primary keys are checked as they are rebuilt, foreign keys by one
            # join each when re-added: a duplicate or dangling row still fails the seed.
            for statement in rebuild + relink:
                await conn.execute(statement)
                progress("indexes", 1)
            if rebuild or relink:
                report.phases["indexes"] = time.perf_counter() - started
            # What the disabled triggers would have added, as the generator counted it: the
            # rows already there were counted by the triggers when they were written.
            await _add_counts(conn, gen.counts)
            for table, trigger in PG_TRIGGERS:
                await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
        # VACUUM as well as ANALYZE: a table just filled by COPY has no visibility map yet,
        # so no index-only scan until autovacuum comes by; the feed's per-author index scans
        # read several times the buffers without it (benchmarks/explain_feed.py).
        await conn.execute(
            "VACUUM (ANALYZE) users, posts, tags, post_tags, likes, follows, post_counts"
        )
    finally:
        await conn.close()


# Tables of (bigint, bigint, timestamptz) rows that reference posts: encoded for a binary
# COPY in a thread while the posts are still streaming (see _EncodedAhead).
_LINK_TABLES = ("post_tags", "likes")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
# Field count, then each field's length and value.
_LINK_ROW = struct.Struct("!hiqiqiq")
_CHUNK_BYTES = 1 << 20
ENCODER_THREAD = "fastpost-seed-encoder"


class _EncodedAhead:
    """post_tags and likes, encoded as binary COPY data by a thread while posts load.

    During the posts COPY PostgreSQL works (to_tsvector on each post, see the module's
    docstring) and this process mostly waits; the tables after it were the other way
    round, this process generating rows while the server waited. Encoded ahead, they
    are ready when the posts are in, and their COPYs run at the server's pace. 38 bytes a
    row: 57 MB for the 1.5M tags of a million posts, held until their COPY.
    """

    def __init__(self, gen: RowGenerator, progress: Progress) -> None:
        self.gen = gen
        self.progress = progress
        self.done: dict[str, asyncio.Future[list[bytes]]] = {}
        loop = asyncio.get_running_loop()
        for table in _LINK_TABLES:
            self.done[table] = loop.create_future()
        self.thread = threading.Thread(
            target=self._run, args=(loop,), name=ENCODER_THREAD, daemon=True
        )
        self.thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        for table in _LINK_TABLES:
            future = self.done[table]
            try:
                generate = self.gen.post_tags if table == "post_tags" else self.gen.likes
                rows = _counting(generate(), table, self.progress)
                chunks = _encode_links(rows, self.gen.cancelled)
            except BaseException as exc:  # handed to the awaiting side, which re-raises
                loop.call_soon_threadsafe(_settle, future, None, exc)
                return
            loop.call_soon_threadsafe(_settle, future, chunks, None)

    async def encoded(self, table: str) -> list[bytes]:
        """Wait for `table`'s COPY data and return it."""
        return await self.done[table]

    def stop(self) -> None:
        """Make the thread give up if it is still waiting or encoding, and wait for it."""
        self.gen.cancelled.set()
        self.thread.join()
        for future in self.done.values():
            # A result still on its way finds the future cancelled (_settle); a failure
            # nobody awaited is marked as seen, so asyncio doesn't log it.
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()


def _settle(
    future: asyncio.Future[list[bytes]], result: list[bytes] | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result or [])


def _encode_links(rows: Iterator[Row], cancelled: threading.Event) -> list[bytes]:
    """Encode (bigint, bigint, Unix-microseconds) rows as binary COPY data, in chunks."""
    pack = _LINK_ROW.pack
    chunks = [_COPY_HEADER]
    chunk = bytearray()
    for a, b, unix_us in rows:
        chunk += pack(3, 8, a, 8, b, 8, unix_us - _PG_EPOCH_OFFSET)
        if len(chunk) >= _CHUNK_BYTES:
            if cancelled.is_set():
                raise RuntimeError("seed cancelled")
            chunks.append(bytes(chunk))
            chunk.clear()
    chunks.append(bytes(chunk) + _COPY_TRAILER)
    return chunks


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _add_counts(conn: Any, counts: Counter[tuple[str, int]]) -> None:
    """Add `counts` to post_counts, as its triggers do (migration 0002)."""
    if not counts:
        return
    kinds, refs, deltas = zip(*((kind, ref, n) for (kind, ref), n in counts.items()), strict=True)
    await conn.execute(
        "INSERT INTO post_counts (kind, ref_id, n) "
        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) "
        "ON CONFLICT (kind, ref_id) DO UPDATE SET n = post_counts.n + excluded.n",
        list(kinds),
        list(refs),
        list(deltas),
    )


def _to_pg_timestamp(unix_us: int) -> tuple[int]:
    return (unix_us - _PG_EPOCH_OFFSET,)


def _from_pg_timestamp(value: tuple[int]) -> int:
    return value[0] + _PG_EPOCH_OFFSET


async def _reserve_pg(conn: Any, table: str, count: int) -> int:
    """Take `count` consecutive ids from the table's identity sequence; return the first."""
    if count == 0:
        return 0
    seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
    first = await conn.fetchval("SELECT nextval($1::regclass)", seq)
    await conn.execute("SELECT setval($1::regclass, $2)", seq, first + count - 1)
    return int(first)


def _seed_sqlite(
    settings: Settings, plan: SeedPlan, progress: Progress, report: SeedReport
) -> None:
    path = make_url(settings.db.url).database
    if not path:
        raise ValueError("seeding needs a file-backed SQLite database")
    hashes = password_hashes(settings)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={settings.db.sqlite_busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            first_user = _next_sqlite_id(conn, "users")
            first_post = _next_sqlite_id(conn, "posts")
            demo_missing = not conn.execute(
                "SELECT 1 FROM users WHERE username = ?", (DEMO_USERNAME,)
            ).fetchone()
            names = tag_names(plan)
            conn.executemany(
                "INSERT OR IGNORE INTO tags (name) VALUES (?)", [(name,) for name in names]
            )
            placeholders = ", ".join("?" * len(names))
            tag_ids = (
                [
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM tags WHERE name IN ({placeholders}) ORDER BY name", names
                    )
                ]
                if names
                else []
            )
            gen = RowGenerator(
                plan, first_user, first_post, with_demo_user=demo_missing, tag_ids=tag_ids
            )
            for table in TABLES:
                started = time.perf_counter()
                columns = _COLUMNS[table]
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})"
                )
                rows = _counting(_rows(gen, table, hashes), table, progress)
                count = 0
                for batch in _batches(_sqlite_values(rows, columns), 5000):
                    conn.executemany(sql, batch)
                    count += len(batch)
                report.counts[table] = count
                report.phases[table] = time.perf_counter() - started
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _next_sqlite_id(conn: sqlite3.Connection, table: str) -> int:
    # Under BEGIN IMMEDIATE no other writer can take these ids before we insert them.
    value = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0]
    return int(value)


def _sqlite_values(rows: Iterator[Row], columns: tuple[str, ...]) -> Iterator[Row]:
    # Timestamps in the exact text form SQLAlchemy's SQLite DateTime writes, so that
    # comparisons in keyset pagination see one format.
    timestamps = {i for i, name in enumerate(columns) if name.endswith("_at")}
    for row in rows:
        yield tuple(
            (_UNIX_EPOCH + timedelta(microseconds=v)).strftime("%Y-%m-%d %H:%M:%S.%f")
            if i in timestamps
            else v
            for i, v in enumerate(row)
        )


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def seed(settings: Settings, plan: SeedPlan, progress: Progress) -> SeedReport:
    """Load the plan's rows into the configured database, in one transaction."""
    if plan.users < 1 and (plan.posts or plan.follows or plan.likes):
        raise ValueError("posts, follows and likes need at least one user")
    if settings.db.shards:
        from fastpost.shards.seed import seed_shards

        return await seed_shards(settings, plan, progress)
    report = SeedReport()
    started = time.perf_counter()
    if settings.db.is_sqlite:
        await asyncio.to_thread(_seed_sqlite, settings, plan, progress, report)
    else:
        await _seed_postgres(settings, plan, progress, report)
    report.seconds = time.perf_counter() - started
    return report


async def database_is_empty(settings: Settings) -> bool:
    """True when the users table has no rows (used by `seed --if-empty`)."""
    from sqlalchemy import text

    from fastpost.db import Database

    # Sharded mode: the directory names every user of every database.
    db = Database(
        settings.db.for_shard(settings.db.shards[0]) if settings.db.shards else settings.db
    )
    try:
        async with db.reader() as conn:
            table = "user_directory" if settings.db.shards else "users"
            found = await conn.scalar(text(f"SELECT 1 FROM {table} LIMIT 1"))
            return found is None
    finally:
        await db.dispose()
