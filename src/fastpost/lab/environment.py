"""The lab's database: a fresh one (SQLite file or PostgreSQL scratch database), migrated
with fastpost's own migrations and seeded with fastpost.seed, or one kept from a run with the
same plan."""

from __future__ import annotations

import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from fastpost.db import Database
from fastpost.lab.config import LabConfig
from fastpost.migrations import upgrade
from fastpost.seed import SeedPlan, seed
from fastpost.settings import (
    AuthSettings,
    DatabaseSettings,
    ObservabilitySettings,
    RateLimitSettings,
    Settings,
)

# Scratch databases the lab makes on a PostgreSQL server all start with this.
SCRATCH_PREFIX = "fastpost_lab"


@dataclass
class LabDatabase:
    """A migrated, seeded database and the settings that reach it."""

    settings: Settings
    db: Database
    dialect: str
    reused: bool
    seed_seconds: float

    @property
    def url(self) -> str:
        return self.settings.db.url


def plan_tag(plan: SeedPlan) -> str:
    """A name part that says which data a kept database holds."""
    return f"u{plan.users}_p{plan.posts}_f{plan.follows}_l{plan.likes}_s{plan.seed}"


def async_url(url: str) -> URL:
    """The URL with fastpost's async driver for its backend."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def lab_settings(url: str, *, redis_url: str | None, data_dir: Path) -> Settings:
    """Settings for the lab's own app and engines: quiet logs, a throwaway signing key."""
    return Settings(
        env="development",
        data_dir=data_dir,
        db=DatabaseSettings(url=url, pool_size=10, write_pool_size=5),
        auth=AuthSettings(secret_key=secrets.token_urlsafe(48)),
        observability=ObservabilitySettings(
            log_level="WARNING", access_log=False, tracing="off", n_plus_one_threshold=0
        ),
        redis_url=redis_url,
        # The experiments send from one address as fast as they can.
        rate_limits=RateLimitSettings(enabled=False),
    )


async def _admin_execute(server: URL, sql: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def database_exists(server: URL, name: str) -> bool:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            return found is not None
    finally:
        await engine.dispose()


async def _holds_plan(db: Database, plan: SeedPlan) -> bool:
    """True when a kept database was seeded with this plan (its users and posts match)."""
    try:
        async with db.reader() as conn:
            users = await conn.scalar(text("SELECT count(*) FROM users"))
            posts = await conn.scalar(text("SELECT count(*) FROM posts"))
    except Exception:
        return False
    return bool(users == plan.users and posts == plan.posts)


def _is_sqlite(config: LabConfig) -> bool:
    url = config.database_url
    return url is None or async_url(url).drivername.startswith("sqlite")


def _sqlite_location(
    config: LabConfig, tag: str
) -> tuple[URL, Path, tempfile.TemporaryDirectory[str] | None]:
    """The SQLite URL, the folder beside it, and the temporary folder to remove after."""
    if config.database_url is not None:
        url = async_url(config.database_url)
        data_dir = Path(url.database or "lab.db").resolve().parent
        data_dir.mkdir(parents=True, exist_ok=True)
        return url, data_dir, None
    if config.keep:
        data_dir = config.work_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        return async_url(f"sqlite:///{data_dir / f'lab_{tag}.db'}"), data_dir, None
    temp_dir = tempfile.TemporaryDirectory(prefix="fastpost_lab_")
    data_dir = Path(temp_dir.name)
    return async_url(f"sqlite:///{data_dir / 'lab.db'}"), data_dir, temp_dir


@asynccontextmanager
async def lab_database(config: LabConfig) -> AsyncIterator[LabDatabase]:
    """Create (or reuse, with `keep`), migrate and seed the lab's database; drop it after,
    unless `keep`."""
    tag = plan_tag(config.plan)
    if _is_sqlite(config):
        url, data_dir, temp_dir = _sqlite_location(config, tag)
        async with _prepared(config, url, data_dir) as database:
            try:
                yield database
            finally:
                if temp_dir is not None:
                    temp_dir.cleanup()
        return
    assert config.database_url is not None
    server = async_url(config.database_url)
    scratch = (
        f"{SCRATCH_PREFIX}_{tag}" if config.keep else f"{SCRATCH_PREFIX}_{uuid.uuid4().hex[:12]}"
    )
    if not await database_exists(server, scratch):
        await _admin_execute(server, f'CREATE DATABASE "{scratch}"')
    try:
        with tempfile.TemporaryDirectory(prefix="fastpost_lab_") as folder:
            async with _prepared(config, server.set(database=scratch), Path(folder)) as database:
                yield database
    finally:
        if not config.keep:
            await _admin_execute(server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


@asynccontextmanager
async def _prepared(config: LabConfig, url: URL, data_dir: Path) -> AsyncIterator[LabDatabase]:
    """Migrate and seed (unless it already holds the plan) the database at `url`."""
    settings = lab_settings(
        url.render_as_string(hide_password=False), redis_url=config.redis_url, data_dir=data_dir
    )
    db = Database(settings.db)
    try:
        await upgrade(db.write_engine, settings.db)
        reused = await _holds_plan(db, config.plan)
        seed_seconds = 0.0
        if not reused:
            async with db.reader() as conn:
                empty = await conn.scalar(text("SELECT 1 FROM users LIMIT 1")) is None
            if not empty:
                raise RuntimeError(
                    f"{settings.db.url} holds data from another plan; give a fresh database "
                    "(or the sizes it was seeded with)"
                )
            report = await seed(settings, config.plan, lambda phase, rows: None)
            seed_seconds = report.seconds
        await db.connect()
        yield LabDatabase(settings, db, db.dialect, reused, seed_seconds)
    finally:
        await db.dispose()
