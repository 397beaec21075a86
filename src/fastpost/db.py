"""Engines, sessions and the two ways in: `transaction()` for writes, `reader()` for reads.

Writes go through an ORM `AsyncSession` inside one transaction that the route boundary
commits or rolls back. Reads take the lean path: a pooled connection in autocommit mode
running Core statements, so a single read costs one round trip instead of
BEGIN / SELECT / ROLLBACK (a third of the ORM's gap to raw asyncpg, ../shared/anchors.md).

On SQLite the two ways have separate engines: one writer connection per process whose
transactions start with `BEGIN IMMEDIATE`, so concurrent requests queue in the pool instead
of failing with "database is locked" when a deferred transaction tries to upgrade to a
write lock; and a pool of reader connections that WAL lets run beside the writer.
On PostgreSQL both share one pool. Read replicas and shards will plug in here.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import BigInteger, Integer, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from fastpost.settings import DatabaseSettings


class Base(DeclarativeBase):
    pass


# 64-bit ids in PostgreSQL; in SQLite only "INTEGER PRIMARY KEY" aliases the rowid.
IdType = BigInteger().with_variant(Integer, "sqlite")


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class, for the lean read path."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Statements that reached the database in the current context, when someone is listening:
# tests count queries per request with it, and the N+1 detector builds on it.
_statement_log: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fastpost_statement_log", default=None
)


@contextmanager
def record_statements() -> Iterator[list[str]]:
    """Collect every SQL statement executed in this context (and tasks it spawns)."""
    log: list[str] = []
    token = _statement_log.set(log)
    try:
        yield log
    finally:
        _statement_log.reset(token)


def _log_statement(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    log = _statement_log.get()
    if log is not None:
        log.append(statement)


def _sqlite_connect_hook(busy_timeout_ms: int, *, writer: bool) -> Any:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take BEGIN out of the driver's hands: the writer emits BEGIN IMMEDIATE itself,
        # readers run in autocommit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if writer:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # In WAL mode NORMAL is safe against corruption and skips an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engines(settings: DatabaseSettings) -> tuple[AsyncEngine, AsyncEngine]:
    """Return (write engine, read engine) for a database URL."""
    if settings.is_sqlite:
        writer = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_size=1,
            max_overflow=0,
            # Writers queue here for the one connection; each holds it for about a
            # millisecond, so a long queue drains well within this.
            pool_timeout=max(settings.pool_timeout, 30.0),
        )
        event.listen(
            writer.sync_engine,
            "connect",
            _sqlite_connect_hook(settings.sqlite_busy_timeout_ms, writer=True),
        )
        event.listen(writer.sync_engine, "begin", _begin_immediate)
        reader = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            isolation_level="AUTOCOMMIT",
        )
        event.listen(
            reader.sync_engine,
            "connect",
            _sqlite_connect_hook(settings.sqlite_busy_timeout_ms, writer=False),
        )
    else:
        writer = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_pre_ping=False,
        )
        # Same pool; connections checked out through this one skip BEGIN/ROLLBACK.
        reader = writer.execution_options(isolation_level="AUTOCOMMIT")
    for engine in {writer.sync_engine, reader.sync_engine}:
        event.listen(engine, "before_cursor_execute", _log_statement)
    return writer, reader


def insert_ignoring_conflicts(
    session: AsyncSession | AsyncConnection, table: Table
) -> sqlite.Insert | postgresql.Insert:
    """INSERT ... ON CONFLICT DO NOTHING, in the session's dialect: idempotent writes (like,
    follow) in one statement, with RETURNING telling whether a row was added."""
    bind = session.get_bind() if isinstance(session, AsyncSession) else session
    if bind.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class Database:
    """The application's database: engines plus the two ways in."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.write_engine, self.read_engine = create_engines(settings)
        self._sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session in a transaction; commit on success, roll back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """Check out an autocommit connection for Core reads."""
        async with self.read_engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.settings.is_sqlite:  # on PostgreSQL the reader shares the writer's pool
            await self.read_engine.dispose()


# Request dependencies. scope="function" ends them when the route function returns, before
# the response is sent: the commit has happened (or failed, and the client is told) by the
# time a client sees 201.
async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.db.transaction() as session:
        yield session


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.db.reader() as conn:
        yield conn


DatabaseDep = Annotated[Database, Depends(_database)]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
ReadConnection = Annotated[AsyncConnection, Depends(_read_connection, scope="function")]
