"""Engines, sessions and the two ways in: `transaction()` for writes, `fetch_*()` for reads.

Writes go through an ORM `AsyncSession` inside one transaction that the route boundary
commits or rolls back.

Reads take the lean path. A read is a SQLAlchemy Core statement, built once (services keep
them in module-level caches with bound parameters) and compiled once per database here.
- On PostgreSQL it runs on a connection of asyncpg's own pool, straight from the compiled
  SQL: no BEGIN/ROLLBACK around a single read, no SQLAlchemy pool checkout or result
  machinery. Served one at a time beside raw asyncpg, a primary-key read through SQLAlchemy
  Core in autocommit ran at about half its requests per second, and at about two thirds
  through SQLAlchemy's pool with the driver connection used directly: for one row the pool
  checkout and the statement machinery each cost about what the query does.
  benchmarks/bench_reads.py showed SQLAlchemy's execution layer as a third of our list
  endpoint's CPU; it and benchmarks/bench_fixed_cost.py measure this path against asyncpg
  running the same SQL. asyncpg's pool is the library's own; we only skip the layers
  between it and the query.
- On SQLite it runs through SQLAlchemy's aiosqlite engine in autocommit, which also turns
  SQLite's text timestamps back into datetimes.
Either way a row is a mapping: `row["title"]`.

Reads and write programs that wait for a connection get one in the order they asked: a
`PoolGate` (fastpost.pool_gate) of the pool's size sits in front of each pool, because the
pools' own queues let a newcomer take a connection handed to a waiter, which made the tail of
a loaded read ten times its median. ORM sessions (`transaction()`) take the write pool's
connection at their first statement, as before, without the gate.

On SQLite the writer is one connection per process whose transactions start with
`BEGIN IMMEDIATE`, so concurrent requests queue in the pool instead of failing with
"database is locked" when a deferred transaction tries to upgrade to a write lock; reader
connections run beside it under WAL.

With read replicas configured (PostgreSQL), `fetch_all` asks `fastpost.replicas` which
server a read goes to, and a committed write hands the client the primary's WAL position
(read-your-writes); writes stay on the primary. Without replicas the read path is the one
above plus one attribute test, and writes send no extra statement.

A database that cannot be reached, or does not answer in time, is a `DatabaseUnavailable`
(503 with Retry-After), never a 500 and never a hang: connects, statements (the app's pools,
PostgreSQL) and waits for a pooled connection all have timeouts, and a connection cut off or
timed out mid-statement is dropped at once rather than released (a release would wait on
the server). A pooled connection the server closed meanwhile (a restart) is replaced at
checkout, so no request meets it. tests/test_db_availability.py and tests/faults/ show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import structlog
from fastapi import Depends, Request
from sqlalchemy import BigInteger, Integer, Table, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import Select, TextClause

from fastpost.closing import close_pool
from fastpost.errors import ServiceUnavailable
from fastpost.observability.statements import StatementRecorder, sent_statements
from fastpost.pool_gate import PoolGate
from fastpost.replicas import PRIMARY_LSN, PRIMARY_UNTIL_EXPIRY, ReplicaSet
from fastpost.replicas import primary_reads as primary_reads  # one of the ways in, re-exported
from fastpost.settings import DatabaseSettings
from fastpost.writes import SqliteWriter, WriteProgram, run_on_postgres

_replica_log = structlog.get_logger("fastpost.replicas")
_log = structlog.get_logger("fastpost.db")

# At most one warning per this many seconds while the database is unavailable: a worker
# answering hundreds of 503s a second must not write hundreds of log lines a second.
UNAVAILABLE_LOG_INTERVAL_SECONDS = 5.0


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached or did not answer in time; its cause is chained."""

    def __init__(self) -> None:
        super().__init__("The database is unavailable, try again shortly")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: SQLAlchemy's DBAPIError wraps the adapted driver error,
    which chains the driver's own."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return
        yield seen
        orig = getattr(seen, "orig", None) if isinstance(seen, sa_exc.DBAPIError) else None
        seen = orig if isinstance(orig, BaseException) else seen.__cause__


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or did not answer in time (try
    again: 503), rather than that a statement was wrong (a bug: 500)."""
    for cause in _causes(exc):
        # Refused, reset, unreachable; TimeoutError (an OSError): a connect, a statement or a
        # wait for a pooled connection ran out of time.
        if isinstance(cause, OSError | sa_exc.TimeoutError):
            return True
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        module = type(cause).__module__
        if module.startswith("asyncpg"):
            import asyncpg

            if isinstance(
                cause,
                # 08: connection lost or refused; 57: shutting down, starting up, cancelled
                # (statement timeout); 53: too many connections, out of memory or disk.
                asyncpg.PostgresConnectionError
                | asyncpg.exceptions.OperatorInterventionError
                | asyncpg.exceptions.InsufficientResourcesError,
            ):
                return True
            if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
                return True
            # The protocol's state broke mid-operation: seen when a statement is sent on a
            # connection whose server's goodbye (a shutdown) has arrived but not been read.
            if isinstance(cause, asyncpg.exceptions.InternalClientError):
                return True
    return False


def _drop_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # A connection that the server closed while it sat in the pool (a restart): asyncpg
    # knows without a round trip. SQLAlchemy then checks out a fresh connection instead of
    # handing on one whose first statement would fail ("connection is closed").
    if record.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("closed by the server while pooled")


def _terminate_invalidated(dbapi_connection: Any, record: Any, exception: Any) -> None:
    # An invalidated connection is broken or stuck: SQLAlchemy's graceful close of it would
    # wait on the server, 2 s on a frozen one, while the request that found it waits too.
    if record.driver_connection is not None:
        record.driver_connection.terminate()


class Base(DeclarativeBase):
    pass


# 64-bit ids in PostgreSQL; in SQLite only "INTEGER PRIMARY KEY" aliases the rowid.
IdType = BigInteger().with_variant(Integer, "sqlite")


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class, for the lean read path."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _log_statement(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    # The statement log (fastpost.observability.statements) lists it as it is sent.
    log = sent_statements.get()
    if log is not None:
        log.append(statement)
    context._fastpost_started = time.perf_counter()


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


def create_engines(
    settings: DatabaseSettings,
    *,
    statements: StatementRecorder,
    statement_timeout: float | None = None,
) -> tuple[AsyncEngine, AsyncEngine]:
    """Return (write engine, read engine) for a database URL, whose statements `statements`
    records; on PostgreSQL, statements that run longer than `statement_timeout` seconds fail
    with TimeoutError."""
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
            max_overflow=0,
            pool_timeout=settings.pool_timeout,
            isolation_level="AUTOCOMMIT",
        )
        event.listen(
            reader.sync_engine,
            "connect",
            _sqlite_connect_hook(settings.sqlite_busy_timeout_ms, writer=False),
        )
    else:
        connect_args: dict[str, Any] = {"timeout": settings.connect_timeout}
        if statement_timeout is not None:
            connect_args["command_timeout"] = statement_timeout
        writer = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_size=settings.write_pool_size,
            max_overflow=0,
            pool_timeout=settings.pool_timeout,
            connect_args=connect_args,
        )
        event.listen(writer.sync_engine, "checkout", _drop_closed_connection)
        event.listen(writer.sync_engine, "invalidate", _terminate_invalidated)
        # For the occasional ad-hoc read through SQLAlchemy (`reader()`); the hot reads use
        # asyncpg's pool (Database.fetch_all). Same pool as the writer, without BEGIN/ROLLBACK.
        reader = writer.execution_options(isolation_level="AUTOCOMMIT")
    record = statements.record

    def time_statement(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        started = getattr(context, "_fastpost_started", None)
        if started is not None:
            record(statement, time.perf_counter() - started, parameters)

    # On PostgreSQL the reader is the writer with options: it shares (and inherits) the
    # writer's listeners, so listening on both would log each of its statements twice.
    for engine in (writer, reader) if settings.is_sqlite else (writer,):
        event.listen(engine.sync_engine, "before_cursor_execute", _log_statement)
        event.listen(engine.sync_engine, "after_cursor_execute", time_statement)
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


Row = Mapping[str, Any]
T = TypeVar("T")
ReadStatement = Select[Any] | TextClause


@dataclass(frozen=True, slots=True)
class _Compiled:
    statement: ReadStatement  # held so that its id() is never reused while cached
    sql: str
    names: tuple[str, ...]  # bound parameter names, in positional order
    defaults: Mapping[str, Any]  # values bound inside the statement itself


async def _keep_session(conn: Any) -> None:
    """Release a read connection without asyncpg's default reset query (RESET ALL, UNLISTEN,
    CLOSE ALL, advisory unlocks): a round trip per read, and nothing to undo, since reads in
    this pool never change session state. An open transaction is still rolled back by the
    pool before this runs."""


class Database:
    """The application's database: engines plus the two ways in."""

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        redis_url: str | None = None,
        statement_timeout: float | None = None,
        statements: StatementRecorder | None = None,
    ) -> None:
        """`statement_timeout` (seconds, PostgreSQL): the app passes its setting; the CLI's
        migrations and seeds run without one. `statements` records every statement: the
        app passes its own (its Observability's), so that its hooks and slow query log see
        its statements only; without it, the database has a recorder of its own."""
        self.settings = settings
        self.statement_timeout = statement_timeout
        self.statements = statements if statements is not None else StatementRecorder()
        self.write_engine, self.read_engine = create_engines(
            settings, statements=self.statements, statement_timeout=statement_timeout
        )
        self._unavailable_logged_at = -UNAVAILABLE_LOG_INTERVAL_SECONDS
        self._sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_pool: Any = None  # asyncpg.Pool on PostgreSQL, once connected
        # Each pool's waiters are served in arrival order (fastpost.pool_gate): the write
        # engine's for write programs, and the read pool's (PostgreSQL).
        write_pool: Any = self.write_engine.sync_engine.pool
        self._write_gate = PoolGate(write_pool.size())
        self._write_gate_timeout: float = write_pool.timeout()
        self._read_gate = PoolGate(settings.pool_size)
        self._compiled: dict[int, _Compiled] = {}
        # None without replicas: the read path then costs nothing more than this test.
        # `redis_url` keeps logged-in users' last write positions (fastpost.replicas).
        self.replicas: ReplicaSet | None = (
            ReplicaSet(settings, redis_url=redis_url) if settings.replica_urls else None
        )

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    async def connect(self) -> None:
        """Open the read pool (PostgreSQL); SQLite's engines connect on first use."""
        if self.dialect != "postgresql" or self._read_pool is not None:
            return
        import asyncpg

        dsn = make_url(self.settings.url).set(drivername="postgresql")
        self._read_pool = await asyncpg.create_pool(
            dsn.render_as_string(hide_password=False),
            # No connection up front: the app starts (and /health/ready reports the
            # reason) while the database is down; connections open on first use.
            min_size=0,
            max_size=self.settings.pool_size,
            reset=_keep_session,
            timeout=self.settings.connect_timeout,
            command_timeout=self.statement_timeout,
        )
        if self.replicas is not None:
            await self.replicas.connect(_keep_session)

    async def _enter_read_gate(self) -> None:
        """Wait, in arrival order, for a place at the read pool (fastpost.pool_gate), as long
        as the pool timeout. A timer costs 6 µs of CPU, a fifth of a read's own statement:
        only a read that must wait sets one."""
        gate = self._read_gate
        if gate.has_room():
            await gate.acquire()
            return
        # asyncio.timeout rather than wait_for: the latter wraps the wait in a task.
        async with asyncio.timeout(self.settings.pool_timeout):
            await gate.acquire()

    @asynccontextmanager
    async def _read_connection(self) -> AsyncIterator[Any]:
        """A connection of the read pool, through its gate (reads off the hot path)."""
        await self._enter_read_gate()
        try:
            async with self._read_pool.acquire() as conn:
                yield conn
        finally:
            self._read_gate.release()

    async def _enter_write_gate(self) -> None:
        """Wait, in arrival order, for a place at the write pool (fastpost.pool_gate); as
        long as a wait for one of its connections may last."""
        try:
            async with asyncio.timeout(self._write_gate_timeout):
                await self._write_gate.acquire()
        except TimeoutError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> DatabaseUnavailable:
        """The 503 for `exc`; a warning now and then says why (not one per request)."""
        now = time.monotonic()
        if now - self._unavailable_logged_at >= UNAVAILABLE_LOG_INTERVAL_SECONDS:
            self._unavailable_logged_at = now
            _log.warning("database_unavailable", error=repr(exc)[:300])
        return DatabaseUnavailable()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session in a transaction; commit on success, roll back on error."""
        # Not `async with session.begin()`: its rollback would run first, and wait on a
        # connection that is cut off or stuck, before we could drop it.
        # No PoolGate here: a session checks out its connection at its first statement, and
        # what comes before (a registration's password hash) must not hold a place.
        session = self._sessions()
        try:
            yield session
            await session.commit()
        except BaseException as exc:
            if not isinstance(exc, Exception) or is_unavailable(exc):
                # Cancelled, cut off or timed out: the connection's state is unknown.
                await session.invalidate()
                if isinstance(exc, Exception):
                    raise self._unavailable(exc) from exc
            raise
        finally:
            await session.close()

    # Made on the first write (SQLite): the connection, and thread, that write programs run on.
    _sqlite_writer: SqliteWriter | None = None

    async def write(self, program: WriteProgram[T], *, atomic: bool = True) -> T:
        """Run a write program (see fastpost.writes) on the primary, in one transaction; with
        atomic=False on PostgreSQL, each of its statements commits on its own (for a write
        that is one statement, or whose earlier statements are idempotent on their own)."""
        log = sent_statements.get()
        dialect = self.write_engine.dialect
        if self.settings.is_sqlite:
            if self._sqlite_writer is None:
                self._sqlite_writer = SqliteWriter(
                    make_url(self.settings.url).database or "",
                    _sqlite_connect_hook(self.settings.sqlite_busy_timeout_ms, writer=True),
                )
            return await self._sqlite_writer.run(dialect, program, log, self.statements.record)
        # The write engine's own pool: the primary, with the connection budget it already has.
        await self._enter_write_gate()
        try:
            raw = await self.write_engine.raw_connection()
        except BaseException as exc:
            self._write_gate.release()
            if isinstance(exc, Exception) and is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        try:
            result = await run_on_postgres(
                raw.driver_connection,
                dialect,
                program,
                atomic=atomic,
                log=log,
                record=self.statements.record,
            )
        except BaseException as exc:
            import asyncpg

            if not isinstance(exc, Exception):  # cancelled: the connection's state is unknown
                raw.invalidate()
                raise
            if is_unavailable(exc) or isinstance(exc, asyncpg.InterfaceError):
                # Cut off or timed out mid-statement: the connection's state is unknown. So
                # is the outcome of a COMMIT cut off: the client is told 503, not that the
                # write failed (an Idempotency-Key makes its retry safe).
                raw.invalidate()
            if is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        finally:
            try:
                raw.close()
            finally:
                self._write_gate.release()
        if self.replicas is not None:  # read-your-writes (fastpost.replicas)
            await self.hand_on_position()
        return result

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """Check out an autocommit SQLAlchemy connection, for reads off the hot path."""
        try:
            async with self.read_engine.connect() as conn:
                yield conn
        except Exception as exc:
            if is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise

    def _compile(self, statement: ReadStatement) -> _Compiled:
        compiled = statement.compile(dialect=self.write_engine.dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            # Expanding IN lists and literal-execute binds change the SQL text per call,
            # which would defeat compiling once; such reads go through SQLAlchemy instead.
            raise ValueError("lean reads need statements with plain bound parameters")
        entry = _Compiled(
            statement, str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params)
        )
        self._compiled[id(statement)] = entry
        return entry

    async def fetch_all(
        self, statement: ReadStatement, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row]:
        """Run a read and return every row as a mapping."""
        if self._read_pool is None:
            try:
                async with self.read_engine.connect() as conn:
                    result = await conn.execute(statement, dict(params or {}))
                    return cast(Sequence[Row], result.mappings().all())
            except Exception as exc:
                if is_unavailable(exc):
                    raise self._unavailable(exc) from exc
                raise
        compiled = self._compiled.get(id(statement)) or self._compile(statement)
        values = compiled.defaults if params is None else {**compiled.defaults, **params}
        args = [values[name] for name in compiled.names]
        log = sent_statements.get()
        if log is not None:
            log.append(compiled.sql)
        replicas = self.replicas
        if replicas is not None:
            replica = await replicas.choose()
            if replica is not None:
                started = time.perf_counter()
                found = await replicas.fetch(replica, compiled.sql, args)
                if found is not None:
                    self.statements.record(compiled.sql, time.perf_counter() - started, args)
                    return cast(Sequence[Row], found)
                # It failed there: once more, on the primary.
                if log is not None:
                    log.append(compiled.sql)
        pool = self._read_pool
        gate = self._read_gate
        try:
            await self._enter_read_gate()
            try:
                # Past the gate a connection is free (every holder passes it): this waits at
                # most for a connect, which has its own timeout.
                conn = await pool.acquire()
            except BaseException:
                gate.release()
                raise
        except Exception as exc:
            if is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        started = time.perf_counter()
        try:
            rows: Sequence[Row] = await conn.fetch(compiled.sql, *args)
        except BaseException as exc:
            if not isinstance(exc, Exception) or is_unavailable(exc):
                # Cancelled, cut off or timed out mid-statement: released as it is, the
                # connection would first wait for the server to acknowledge a cancel, which
                # a frozen server never does (undoing the caller's own timeout, such as
                # /health/ready's). Dropped, it leaves the pool at once.
                import asyncpg

                # Closed by the server, asyncpg has already handed it back to the pool.
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                if isinstance(exc, Exception):
                    raise self._unavailable(exc) from exc
            raise
        finally:
            try:
                await pool.release(conn)
            finally:
                gate.release()
        self.statements.record(compiled.sql, time.perf_counter() - started, args)
        return rows

    async def fetch_one(
        self, statement: ReadStatement, params: Mapping[str, Any] | None = None
    ) -> Row | None:
        """Run a read and return its first row, or None."""
        rows = await self.fetch_all(statement, params)
        return rows[0] if rows else None

    async def primary_lsn(self) -> int:
        """The primary's current WAL position (read-your-writes, after a commit)."""
        log = sent_statements.get()
        if log is not None:
            log.append(PRIMARY_LSN)
        started = time.perf_counter()
        async with asyncio.timeout(self.settings.pool_timeout), self._read_connection() as conn:
            lsn: int = await conn.fetchval(PRIMARY_LSN)
        self.statements.record(PRIMARY_LSN, time.perf_counter() - started)
        return lsn

    async def hand_on_position(self) -> None:
        """After a commit, with replicas: give the client the primary's WAL position, so
        that its next reads see what it wrote (fastpost.replicas)."""
        if self.replicas is None:
            return
        try:
            lsn = await self.primary_lsn()
        except Exception as exc:
            # The write is committed: its answer must not turn into an error. Without its
            # position, the client's reads go to the primary while one would matter.
            _replica_log.warning("write_position_unknown", error=repr(exc)[:300])
            lsn = PRIMARY_UNTIL_EXPIRY
        await self.replicas.committed(lsn)

    async def explain(self, sql: str, args: Sequence[Any]) -> str | None:
        """The plan PostgreSQL chooses for a statement, without running it (slow query log)."""
        if self._read_pool is None:
            return None
        async with asyncio.timeout(self.settings.pool_timeout), self._read_connection() as conn:
            rows = await conn.fetch("EXPLAIN " + sql, *args)
        return "\n".join(row[0] for row in rows)

    def pool_usage(self) -> dict[str, tuple[int, int, int]]:
        """(checked_out, size, overflow) of each pool, for the db_pool_connections gauge."""
        usage: dict[str, tuple[int, int, int]] = {}
        engines = {"write": self.write_engine}
        if self.settings.is_sqlite:
            engines["read"] = self.read_engine
        for name, engine in engines.items():
            pool: Any = engine.sync_engine.pool
            if hasattr(pool, "checkedout"):
                usage[name] = (pool.checkedout(), pool.size(), max(pool.overflow(), 0))
        if self._read_pool is not None:
            size = self._read_pool.get_size()
            checked_out = size - self._read_pool.get_idle_size()
            usage["read"] = (checked_out, self._read_pool.get_max_size(), 0)
        if self.replicas is not None:
            usage.update(self.replicas.pool_usage())
        return usage

    async def dispose(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        if self._sqlite_writer is not None:
            self._sqlite_writer.close()
            self._sqlite_writer = None
        if self._read_pool is not None:
            await close_pool(self._read_pool)
            self._read_pool = None
        await self.write_engine.dispose()
        if self.settings.is_sqlite:  # on PostgreSQL `reader()` shares the writer's pool
            await self.read_engine.dispose()


# Request dependencies. scope="function" ends them when the route function returns, before
# the response is sent: the commit has happened (or failed, and the client is told) by the
# time a client sees 201.
async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once the request's transaction has committed (not if it rolls back).

    Cache invalidation belongs there: done before the commit, a concurrent reader could
    load the old row again and cache it after the invalidation."""
    session.info.setdefault("after_commit", []).append(callback)


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    if db.replicas is not None:
        db.replicas.writing()
    async with db.transaction() as session:
        yield session
    if db.replicas is not None:
        await db.hand_on_position()
    for callback in session.info.pop("after_commit", ()):
        await callback()


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.db.reader() as conn:
        yield conn


DatabaseDep = Annotated[Database, Depends(_database)]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
ReadConnection = Annotated[AsyncConnection, Depends(_read_connection, scope="function")]
