"""Alembic migrations, run by `fastpost db upgrade` (never `create_all`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fastpost.settings import DatabaseSettings

HERE = Path(__file__).parent


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # Alembic's config is ConfigParser-based: a '%' in a password must be doubled.
    config.set_main_option("sqlalchemy.url", settings.url.replace("%", "%%"))
    config.attributes["shard_id"] = settings.shard_id
    return config


async def _run(
    engine: AsyncEngine,
    settings: DatabaseSettings,
    step: Callable[[Config, str], None],
    revision: str,
) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(settings)
        config.attributes["connection"] = connection
        step(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def upgrade(engine: AsyncEngine, settings: DatabaseSettings, revision: str = "head") -> None:
    """Bring the database at `engine` up to `revision`."""
    await _run(engine, settings, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, settings: DatabaseSettings, revision: str) -> None:
    """Take the database at `engine` back down to `revision`."""
    await _run(engine, settings, command.downgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
