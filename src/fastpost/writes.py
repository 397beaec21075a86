"""The lean write path: a write as a program of compiled Core statements on the driver.

A service describes a write as a generator that yields `Step`s (a statement and its
parameters) and is sent back each step's rows; it returns the write's result:

    def _like(values):
        rows = yield Step(INSERT_LIKE, values)
        ...
        return count

`Database.write(program)` runs it on the primary (the write engine's connection):
- On PostgreSQL each statement goes straight to the asyncpg connection that SQLAlchemy's
  write pool holds, from SQL compiled once (no ORM unit of work, no SQLAlchemy execution
  layer), inside one transaction, or, with `atomic=False`, each statement on its own in
  autocommit (a single-statement write then costs one round trip, no BEGIN/COMMIT).
- On SQLite the whole program runs in the writer thread between `BEGIN IMMEDIATE` and
  `COMMIT`, in one hop from the event loop. The program is plain code that cannot await, so
  the write lock is held for the statements alone: no other request's work runs inside the
  transaction (before, each statement was a hop through aiosqlite's thread and back through
  the event loop's queue while the lock was held, and the p95 of `POST /posts/` at a fixed
  200 req/s ran to hundreds of milliseconds: `fastpost bench --scenario create-post --rate
  200` measures it). tests/perf/test_write_statements.py counts each write's statements.

A program must do everything else (ids, hashing, validation, serialisation) before or after
`write()`: it runs inside the transaction. Results come back as rows with values as the
driver gives them (on SQLite timestamps are text), so programs return ids and counts, and
services build responses from the values they wrote.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")
# Records a statement that ran (text, seconds, arguments): the database's statement recorder
# (fastpost.observability.statements.StatementRecorder.record).
RecordStatement = Callable[[str, float, Any], None]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a write program, with its parameters."""

    statement: ClauseElement
    params: Mapping[str, Any] = field(default_factory=dict)


# Rows support both row[0] and row["name"] (asyncpg's Record, sqlite3.Row).
WriteProgram = Generator[Step, Sequence[Any], T]


@dataclass(frozen=True, slots=True)
class _Compiled:
    statement: ClauseElement  # held so that its id() is never reused while cached
    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = {**self.defaults, **params} if self.defaults else params
        args = [values[name] for name in self.names]
        for i, process in enumerate(self.processors):
            if process is not None and args[i] is not None:
                args[i] = process(args[i])
        return args


_compiled: dict[tuple[str, int], _Compiled] = {}


def compiled(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    """The statement's SQL for this dialect, compiled once."""
    key = (dialect.name, id(statement))
    entry = _compiled.get(key)
    if entry is not None:
        return entry
    result = cast(SQLCompiler, statement.compile(dialect=dialect))
    if result.literal_execute_params or result.post_compile_params:
        raise ValueError("lean writes need statements with plain bound parameters")
    names = tuple(result.positiontup or ())
    processors = tuple(
        result.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    # Values bound inside the statement itself; a parameter the caller must give (None here)
    # stays missing, so that forgetting it is a KeyError rather than a NULL written.
    defaults = {name: value for name, value in result.params.items() if value is not None}
    entry = _Compiled(statement, str(result), names, defaults, processors)
    _compiled[key] = entry
    return entry


def insert_or_ignore(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT ... ON CONFLICT DO NOTHING in a dialect: an idempotent write (like, follow) in
    one statement, with RETURNING telling whether a row was added."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _integrity_error(sql: str, args: Sequence[Any], exc: Exception) -> IntegrityError:
    # The ORM path raised SQLAlchemy's IntegrityError; services catch that one class.
    return IntegrityError(sql, list(args), exc)


async def run_on_postgres(
    conn: Any,
    dialect: Dialect,
    program: WriteProgram[T],
    *,
    atomic: bool,
    log: list[str] | None,
    record: RecordStatement,
) -> T:
    """Run a write program on an asyncpg connection."""
    import asyncpg

    async def run() -> T:
        # A StopIteration must not cross a coroutine's frame (PEP 479): caught at each step.
        try:
            step = next(program)
        except StopIteration as stop:
            result: T = stop.value
            return result
        while True:
            c = compiled(step.statement, dialect)
            args = c.args(step.params)
            if log is not None:
                log.append(c.sql)
            started = time.perf_counter()
            try:
                rows = await conn.fetch(c.sql, *args)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise _integrity_error(c.sql, args, exc) from exc
            record(c.sql, time.perf_counter() - started, args)
            try:
                step = program.send(rows)
            except StopIteration as stop:
                result = stop.value
                return result

    try:
        if atomic:
            async with conn.transaction():
                return await run()
        return await run()
    finally:
        program.close()


class SqliteWriter:
    """One SQLite connection in one thread, where write programs run whole."""

    def __init__(self, path: str, on_connect: Callable[[Any, Any], None]) -> None:
        self._path = path
        self._on_connect = on_connect
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._on_connect(conn, None)
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    def _run(
        self, dialect: Dialect, program: WriteProgram[T], timings: list[tuple[str, float, Any]]
    ) -> T:
        conn = self._connection()
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        timings.append(("BEGIN IMMEDIATE", time.perf_counter() - started, ()))
        try:
            step = next(program)
            while True:
                c = compiled(step.statement, dialect)
                args = c.args(step.params)
                started = time.perf_counter()
                try:
                    rows = conn.execute(c.sql, args).fetchall()
                except sqlite3.IntegrityError as exc:
                    raise _integrity_error(c.sql, args, exc) from exc
                timings.append((c.sql, time.perf_counter() - started, args))
                step = program.send(rows)
        except StopIteration as stop:
            started = time.perf_counter()
            conn.execute("COMMIT")
            timings.append(("COMMIT", time.perf_counter() - started, ()))
            result: T = stop.value
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            program.close()

    async def run(
        self,
        dialect: Dialect,
        program: WriteProgram[T],
        log: list[str] | None,
        record: RecordStatement,
    ) -> T:
        """Run a write program in the writer thread, in one transaction."""
        timings: list[tuple[str, float, Any]] = []
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, dialect, program, timings
            )
        finally:
            # Recorded here, in the request's context (the thread has none of it).
            for sql, seconds, args in timings:
                if log is not None:
                    log.append(sql)
                record(sql, seconds, args)

    def close(self) -> None:
        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown(wait=True)
