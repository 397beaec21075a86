"""Deterministic demo and benchmark data, loaded in bulk.

Rows are generated lazily and streamed to the database in one transaction, so memory stays
flat whatever the count and a failed run leaves nothing behind:
- PostgreSQL: binary COPY through asyncpg (`copy_records_to_table`), one COPY per table.
  The generator runs in this process while the server parses and indexes on the other core.
- SQLite: `executemany` in batches through the standard sqlite3 module, inside one
  `BEGIN IMMEDIATE` transaction; the FTS5 triggers index each post as it lands.

Ids are reserved up front as a contiguous block of the table's own sequence, so that likes
and follows can point at posts and users without reading them back.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from fastpost.security import Passwords
from fastpost.settings import Settings

DEMO_USERNAME = "testuser"
DEMO_PASSWORD = "testpass"
# Every other generated account shares this password, so load tests can log in as anyone.
GENERATED_PASSWORD = "password"

DRAFT_SHARE = 0.05
HISTORY = timedelta(days=365)

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
    seed: int = 42


@dataclass
class SeedReport:
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


Progress = Callable[[str, int], None]  # (table, rows just written)


def _sentences(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(8, 16))
        out.append(" ".join(words).capitalize() + ".")
    return out


def _spread(rng: random.Random, remaining: int, slots_left: int, cap: int) -> int:
    """How many of `remaining` items the next of `slots_left` slots gets: skewed (a few
    popular posts, a long tail) but self-correcting, so the total lands on the target."""
    if slots_left <= 1:
        return min(remaining, cap)
    mean = remaining / slots_left
    draw = int(rng.expovariate(1.0) * mean + rng.random())
    return max(0, min(draw, remaining, cap))


class _Generator:
    """Rows for each table, generated on demand from the plan's seed."""

    def __init__(
        self, plan: SeedPlan, first_user_id: int, first_post_id: int, *, with_demo_user: bool
    ) -> None:
        self.plan = plan
        self.with_demo_user = with_demo_user
        self.first_user_id = first_user_id
        self.first_post_id = first_post_id
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.user_ids = range(first_user_id, first_user_id + plan.users)

    def _like_counts(self) -> Iterator[int]:
        # Its own random stream, replayed by likes(): the counts written into
        # posts.likes_count are exactly the likes later inserted.
        rng = random.Random(self.plan.seed * 1_000_003 + 2)
        remaining = self.plan.likes
        for i in range(self.plan.posts):
            k = _spread(rng, remaining, self.plan.posts - i, self.plan.users)
            remaining -= k
            yield k

    def users(self, demo_hash: str, shared_hash: str) -> Iterator[tuple[Any, ...]]:
        rng = random.Random(self.plan.seed)
        joined = self.now - HISTORY - timedelta(days=1)
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

    def posts(self) -> Iterator[tuple[Any, ...]]:
        plan = self.plan
        rng = random.Random(plan.seed + 1)
        sentences = _sentences(rng, 2000)
        # Authors follow a power law: a few prolific writers, many occasional ones.
        weights = [1.0 / (rank + 1) ** 0.8 for rank in range(plan.users)]
        authors = list(self.user_ids)
        rng.shuffle(authors)
        cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            cum.append(total)
        step = HISTORY / max(plan.posts, 1)
        start = self.now - HISTORY
        like_counts = self._like_counts()
        batch = 4096
        for base in range(0, plan.posts, batch):
            n = min(batch, plan.posts - base)
            chosen = rng.choices(authors, cum_weights=cum, k=n)
            for j in range(n):
                i = base + j
                created = start + step * i
                title = " ".join(rng.choices(_WORDS, k=rng.randint(3, 8))).capitalize()
                content = " ".join(rng.choices(sentences, k=3))
                status = "draft" if rng.random() < DRAFT_SHARE else "published"
                yield (
                    self.first_post_id + i,
                    chosen[j],
                    title,
                    content,
                    status,
                    next(like_counts),
                    created,
                    created,
                )

    def likes(self) -> Iterator[tuple[Any, ...]]:
        rng = random.Random(self.plan.seed + 3)
        step = HISTORY / max(self.plan.posts, 1)
        start = self.now - HISTORY
        for i, k in enumerate(self._like_counts()):
            if not k:
                continue
            post_id = self.first_post_id + i
            liked_at = start + step * i + timedelta(seconds=1)
            for user_id in rng.sample(self.user_ids, k):
                yield (user_id, post_id, liked_at)

    def follows(self) -> Iterator[tuple[Any, ...]]:
        plan = self.plan
        rng = random.Random(plan.seed + 4)
        remaining = plan.follows
        since = self.now - HISTORY
        for n, user_id in enumerate(self.user_ids):
            k = _spread(rng, remaining, plan.users - n, plan.users - 1)
            remaining -= k
            for other in rng.sample(self.user_ids, min(k + 1, plan.users)):
                if other != user_id and k:
                    k -= 1
                    yield (user_id, other, since)


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
        "content",
        "status",
        "likes_count",
        "created_at",
        "updated_at",
    ),
    "likes": ("user_id", "post_id", "created_at"),
    "follows": ("follower_id", "followee_id", "created_at"),
}
TABLES = ("users", "posts", "likes", "follows")


def _counting(
    rows: Iterator[tuple[Any, ...]], table: str, progress: Progress, every: int = 10_000
) -> Iterator[tuple[Any, ...]]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if n == every:
            progress(table, n)
            n = 0
    if n:
        progress(table, n)


def _rows(gen: _Generator, table: str, hashes: tuple[str, str]) -> Iterator[tuple[Any, ...]]:
    if table == "users":
        return gen.users(*hashes)
    if table == "posts":
        return gen.posts()
    if table == "likes":
        return gen.likes()
    return gen.follows()


def _hashes(settings: Settings) -> tuple[str, str]:
    passwords = Passwords(settings)
    return passwords.hash_sync(DEMO_PASSWORD), passwords.hash_sync(GENERATED_PASSWORD)


async def _seed_postgres(
    settings: Settings, plan: SeedPlan, progress: Progress, report: SeedReport
) -> None:
    import asyncpg

    url = make_url(settings.db.url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    hashes = await asyncio.to_thread(_hashes, settings)
    try:
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
            gen = _Generator(plan, first_user, first_post, with_demo_user=demo_missing)
            for table in TABLES:
                rows = _counting(_rows(gen, table, hashes), table, progress)
                result = await conn.copy_records_to_table(
                    table, records=rows, columns=_COLUMNS[table]
                )
                report.counts[table] = int(result.split()[-1])
        await conn.execute("ANALYZE users, posts, likes, follows")
    finally:
        await conn.close()


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
    hashes = _hashes(settings)
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
            gen = _Generator(plan, first_user, first_post, with_demo_user=demo_missing)
            for table in TABLES:
                columns = _COLUMNS[table]
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})"
                )
                rows = _counting(_rows(gen, table, hashes), table, progress)
                count = 0
                for batch in _batches(_sqlite_values(rows), 5000):
                    conn.executemany(sql, batch)
                    count += len(batch)
                report.counts[table] = count
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


def _sqlite_values(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    # Timestamps in the exact text form SQLAlchemy's SQLite DateTime writes, so that
    # comparisons in keyset pagination see one format.
    for row in rows:
        yield tuple(
            v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in row
        )


def _batches(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
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

    db = Database(settings.db)
    try:
        async with db.reader() as conn:
            found = await conn.scalar(text("SELECT 1 FROM users LIMIT 1"))
            return found is None
    finally:
        await db.dispose()
