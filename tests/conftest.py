"""Shared fixtures: a migrated database per backend, the app, an HTTP client, factories.

Every database-facing test runs on SQLite, and again on PostgreSQL when
FASTPOST_TEST_POSTGRES_URL is set (a database of its own is created for the run and
dropped after it). The API tests (ALSO_SHARDED) run a third time in sharded mode, on two
databases of that PostgreSQL (issue #20), unless marked `unsharded` with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.ids import shard_of
from fastpost.migrations import upgrade
from fastpost.observability.statements import collect_n_plus_one, record_statements
from fastpost.posts.models import Post
from fastpost.posts.slugs import make_sharded_slug
from fastpost.settings import AuthSettings, DatabaseSettings, RateLimitSettings, Settings
from fastpost.shards.router import Shards
from fastpost.shards.setup import init_shards
from fastpost.shards.shard_map import SEQUENCES, logical_shard_for_username
from fastpost.timeutil import utcnow
from fastpost.users.models import User
from fastpost.users.service import cached_me
from tests.helpers import (
    RedisClusterNodes,
    admin_execute,
    postgres_url,
    redis_cluster,
    redis_cluster_missing_reason,
    scratch_databases,
)

POSTGRES_URL = os.environ.get("FASTPOST_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
SHARDED = "sharded"
# The test directories whose tests also run in sharded mode: the API's, which sharded mode
# answers alike (fastpost.shards). Infrastructure tests (cache, lab, cluster...) do not.
ALSO_SHARDED = ("posts", "users", "social", "realworld")
TESTS = Path(__file__).parent
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
# Cheapest Argon2 parameters: tests check behaviour, not hashing cost.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8, "argon2_parallelism": 1}
PASSWORD_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)


def make_settings(url: str, shards: list[str] | None = None, **overrides: Any) -> Settings:
    # No rate limits unless a test asks (tests/test_rate_limits.py): one client logs in and
    # writes far faster than any person.
    overrides.setdefault("rate_limits", RateLimitSettings(enabled=False))
    return Settings(
        env="test",
        db=DatabaseSettings(url=url, shards=shards or [], pool_size=5, write_pool_size=5),
        auth=AuthSettings(secret_key=TEST_SECRET, **FAST_ARGON2),
        **overrides,
    )


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A 3-master Redis Cluster of the session's own (tests.helpers.redis_cluster)."""
    reason = redis_cluster_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


@pytest.fixture(scope="session")
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    name = f"fastpost_test_{uuid.uuid4().hex[:12]}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    url = postgres_url(name)
    try:
        db = Database(DatabaseSettings(url=url))
        await upgrade(db.write_engine, db.settings)
        await db.dispose()
        yield url
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (cheaper than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    db = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{path}"))
    await upgrade(db.write_engine, db.settings)
    await db.dispose()
    return path


@pytest.fixture(scope="session")
async def sharded_databases() -> AsyncIterator[list[str]]:
    """Two fresh databases for this test run, prepared as the shards of sharded mode."""
    if not POSTGRES_URL:
        pytest.skip("sharded mode needs PostgreSQL: set FASTPOST_TEST_POSTGRES_URL")
    async with scratch_databases(f"fastpost_test_{uuid.uuid4().hex[:12]}_shard", 2) as urls:
        await init_shards(DatabaseSettings(url=urls[0], shards=urls))
        yield urls


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give the tests of ALSO_SHARDED the sharded backend (as a parametrize mark, which the
    fixture's own params then yield to); one marked `unsharded` is skipped there, its
    reason said."""
    if "database_url" not in metafunc.fixturenames or not POSTGRES_URL:
        return
    if metafunc.definition.path.relative_to(TESTS).parts[0] not in ALSO_SHARDED:
        return
    unsharded = metafunc.definition.get_closest_marker("unsharded")
    marks = [pytest.mark.skip(reason=f"unsharded: {unsharded.args[0]}")] if unsharded else []
    backends = [*BACKENDS, pytest.param(SHARDED, marks=marks)]
    metafunc.definition.add_marker(pytest.mark.parametrize("database_url", backends, indirect=True))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each backend (in sharded mode, the first shard's)."""
    if request.param == "sqlite":
        path = tmp_path / "fastpost.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    if request.param == SHARDED:
        shards: list[str] = request.getfixturevalue("sharded_databases")
        return shards[0]
    url: str = request.getfixturevalue("postgres_database")
    return url


def is_sharded(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs on the sharded backend."""
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("database_url") == SHARDED


# Children first, the counters (written by the triggers of migration 0002) last. DELETE, not
# TRUNCATE, which makes new files for every table: on tables this small DELETE is cheaper,
# and it is paid before each test (on two databases on the sharded backend).
SHARD_TABLES = (
    "likes",
    "follows",
    "post_tags",
    "comments",
    "posts",
    "tags",
    "users",
    "post_counts",
    "user_directory",
)
# The tables whose ids come from a sequence of their own (the unsharded ids).
OWN_SEQUENCE_TABLES = ("users", "posts", "comments", "tags")


def _emptying_script(*, restart_ids: bool) -> str:
    """The statements that empty a database of the tests, as one script: sent in one round
    trip (the simple query protocol), it runs as one transaction."""
    statements = [f"DELETE FROM {table}" for table in SHARD_TABLES]
    if restart_ids:
        tables = ", ".join(f"'{table}'" for table in OWN_SEQUENCE_TABLES)
        statements.append(
            "SELECT setval(seq, 1, false) FROM ("
            f"SELECT pg_get_serial_sequence(t, 'id') AS seq FROM unnest(ARRAY[{tables}]) t"
            ") s WHERE seq IS NOT NULL"
        )
    return ";\n".join(statements)


class PostgresEmptier:
    """Empties the tests' PostgreSQL databases before each test, on one connection per
    database kept for the session: opening one per test (an engine, a connection, a
    statement per table) cost several times the DELETEs themselves."""

    def __init__(self) -> None:
        self._connections: dict[str, asyncpg.Connection] = {}

    async def empty(self, url: str, *, restart_ids: bool) -> None:
        """Empty a database; with restart_ids, its tables' own id sequences start again at 1
        (as on a fresh database). The sharded backend's logical-shard sequences go on either
        way: ids are never reused there."""
        connection = self._connections.get(url)
        if connection is None or connection.is_closed():
            dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            connection = self._connections[url] = await asyncpg.connect(dsn)
        await connection.execute(_emptying_script(restart_ids=restart_ids))

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()


@pytest.fixture(scope="session")
async def postgres_emptier() -> AsyncIterator[PostgresEmptier]:
    """Connects only to the databases it is asked to empty (none on SQLite alone)."""
    emptier = PostgresEmptier()
    try:
        yield emptier
    finally:
        await emptier.close()


@pytest.fixture
async def settings(
    database_url: str,
    tmp_path: Path,
    postgres_emptier: PostgresEmptier,
    request: pytest.FixtureRequest,
) -> Settings:
    if is_sharded(request):
        shards: list[str] = request.getfixturevalue("sharded_databases")
        await asyncio.gather(*(postgres_emptier.empty(u, restart_ids=False) for u in shards))
        return make_settings(shards[0], shards=shards, data_dir=tmp_path / "data")
    if database_url.startswith("postgresql"):
        # One database for the run, emptied before each test.
        await postgres_emptier.empty(database_url, restart_ids=True)
    return make_settings(database_url, data_dir=tmp_path / "data")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


@dataclass
class TestUser:
    __test__ = False  # not a test class, despite the name

    id: int
    username: str
    headers: dict[str, str]


class Factory:
    """Makes rows straight in the database, so tests set up state without API round trips.
    In sharded mode each row goes where the app would put it (fastpost.shards: a user by
    their name's logical shard, with their directory row; a post with its author; a follow
    on both users' databases), numbered from its logical shard's sequence."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.db: Database = app.state.db
        self.shards: Shards | None = getattr(app.state, "shards", None)
        self._n = 0

    async def _placed(self, logical: int, fields: dict[str, Any]) -> Database:
        """The database for a new row of a logical shard; in sharded mode, its id too."""
        if self.shards is None:
            return self.db
        db = self.shards.for_logical(logical)
        sequence = text(f"SELECT nextval('{SEQUENCES[logical]}')")
        async with db.reader() as conn:
            fields["id"] = int(await conn.scalar(sequence))
        return db

    async def user(self, username: str | None = None, **fields: Any) -> TestUser:
        self._n += 1
        username = username or f"user{self._n}"
        email = fields.pop("email", f"{username}@example.com")
        db = await self._placed(logical_shard_for_username(username), fields)
        if self.shards is not None:
            async with self.shards.directory.transaction() as session:
                await session.execute(
                    text(
                        "INSERT INTO user_directory (username_lower, email, user_id) "
                        "VALUES (:name, :email, :id)"
                    ),
                    {"name": username.lower(), "email": email.lower(), "id": fields["id"]},
                )
        async with db.transaction() as session:
            user = User(username=username, email=email, password_hash=PASSWORD_HASH, **fields)
            session.add(user)
            await session.flush()
        if user.is_active:
            # As a login does (users.service.remember_me): the account check of the requests
            # its token makes finds the account cached, and tests that count a route's
            # statements count the route's alone.
            await cached_me(db=db, cache=self.app.state.cache, user_id=user.id)
        token = self.app.state.tokens.issue(user.id).access_token
        return TestUser(user.id, username, {"Authorization": f"Bearer {token}"})

    async def users(self, count: int) -> list[TestUser]:
        return [await self.user() for _ in range(count)]

    async def post(self, author: TestUser, **fields: Any) -> int:
        self._n += 1
        now = fields.pop("created_at", utcnow())
        db = await self._placed(shard_of(author.id), fields)
        title = fields.pop("title", f"Post {self._n}")
        if self.shards is not None:
            fields.setdefault("slug", make_sharded_slug(title, shard_of(author.id)))
        async with db.transaction() as session:
            post = Post(
                author_id=author.id,
                title=title,
                content=fields.pop("content", f"Content of post {self._n}"),
                status=fields.pop("status", "published"),
                created_at=now,
                updated_at=now,
                **fields,
            )
            session.add(post)
            await session.flush()
        return post.id

    async def follow(
        self, follower: TestUser, followee: TestUser, created_at: datetime | None = None
    ) -> None:
        from fastpost.social.models import Follow

        now = created_at or utcnow()
        if self.shards is None:
            databases = [self.db]
        else:
            databases = list(
                {id(db): db for db in map(self.shards.for_id, (follower.id, followee.id))}.values()
            )
        for db in databases:
            async with db.transaction() as session:
                session.add(
                    Follow(follower_id=follower.id, followee_id=followee.id, created_at=now)
                )


@pytest.fixture
def factory(app: FastAPI) -> Factory:
    return Factory(app)


@pytest.fixture(autouse=True)
def _fail_on_n_plus_one(request: pytest.FixtureRequest) -> Iterator[None]:
    """Strict N+1 detection: a test fails when any request it makes repeats one statement
    shape more than the threshold (tests that show the detector opt out with a marker)."""
    if request.node.get_closest_marker("allow_n_plus_one"):
        yield
        return
    with collect_n_plus_one() as found:
        yield
    if found:
        pytest.fail(f"N+1 queries: {found}")


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement the code under test sends, in order."""
    with record_statements() as log:
        yield log


def select_count(log: list[str]) -> int:
    return sum(1 for s in log if s.lstrip().upper().startswith(("SELECT", "WITH")))
