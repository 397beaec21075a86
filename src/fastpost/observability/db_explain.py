"""`fastpost db explain METHOD PATH`: the plan of every statement one request sends.

The request goes once through the app in this process, with the cache off so that the
statements are the ones an uncached request sends; every statement is captured with its
parameters, and each one's plan is printed with its slowest node marked `>>`. It never
changes data:
- PostgreSQL: the request runs on one connection inside a transaction that is rolled back
  (the app's own transactions become savepoints in it); the statements are then replayed
  in order under `EXPLAIN (ANALYZE, BUFFERS)` in a second transaction, also rolled back.
- SQLite: the request runs against a snapshot of the database file (sqlite3's backup), and
  `EXPLAIN QUERY PLAN`, which runs nothing, reads the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastpost.observability.db_top import one_line
from fastpost.observability.statements import StatementRecorder
from fastpost.settings import Settings


class ExplainRefused(Exception):
    """The request cannot be explained as asked (an unknown user, no database file)."""


# --- capturing what one request sends ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentStatement:
    sql: str
    parameters: tuple[Any, ...]
    seconds: float  # as it ran in the request


_capturing: contextvars.ContextVar[list[SentStatement] | None] = contextvars.ContextVar(
    "fastpost_explain_capture", default=None
)


@contextlib.contextmanager
def capture_statements(recorder: StatementRecorder) -> Iterator[list[SentStatement]]:
    """Collect every statement the app sends in this context, with its parameters and
    duration: a hook on the app's statement recorder, which every way into the database
    reports to (SQLAlchemy's cursor events, the lean read path, the write programs).
    tests/observability/test_db_diagnosis.py fails if a statement of the request goes
    missing."""
    sent: list[SentStatement] = []

    def collect(statement: str, seconds: float, parameters: Any) -> None:
        log = _capturing.get()
        if log is not None:
            args = tuple(parameters) if isinstance(parameters, list | tuple) else ()
            log.append(SentStatement(statement, args, seconds))

    token = _capturing.set(sent)
    recorder.hooks.append(collect)
    try:
        yield sent
    finally:
        recorder.hooks.remove(collect)
        _capturing.reset(token)


_EXPLAINABLE = ("select", "insert", "update", "delete", "with")


def explainable(sql: str) -> bool:
    """Statements with a plan: not BEGIN, COMMIT, SAVEPOINT and the like."""
    words = sql.split(None, 1)
    return bool(words) and words[0].lower() in _EXPLAINABLE


class _OneTransaction:
    """The app's Database, with every way in going through one PostgreSQL connection that
    is inside a transaction: the app's commits release savepoints, and the caller rolls the
    whole request back. Anything else is the real Database's."""

    replicas = None  # every read on the primary, in the transaction

    def __init__(self, db: Any, conn: Any, driver: Any) -> None:
        self._db = db
        self._conn = conn  # SQLAlchemy AsyncConnection, inside its transaction
        self._driver = driver  # its asyncpg connection
        # One connection runs one statement at a time.
        self._lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        from sqlalchemy.ext.asyncio import AsyncSession

        session = AsyncSession(
            bind=self._conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    async def write(self, program: Any, *, atomic: bool = True) -> Any:
        from fastpost.writes import run_on_postgres

        async with self._lock:
            # asyncpg nests the program's transaction in the open one: a savepoint.
            return await run_on_postgres(
                self._driver,
                self._db.write_engine.dialect,
                program,
                atomic=atomic,
                log=None,
                record=self._db.statements.record,
            )

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Any]:
        yield self._conn

    async def fetch_all(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        db = self._db
        # The read path's own compiled SQL, so that the statement is the one it sends.
        compiled = db._compiled.get(id(statement)) or db._compile(statement)
        values = compiled.defaults if params is None else {**compiled.defaults, **params}
        args = [values[name] for name in compiled.names]
        async with self._lock:
            started = time.perf_counter()
            rows = await self._driver.fetch(compiled.sql, *args)
        db.statements.record(compiled.sql, time.perf_counter() - started, args)
        return rows

    async def fetch_one(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        rows = await self.fetch_all(statement, params)
        return rows[0] if rows else None

    async def hand_on_position(self) -> None:
        """No replicas in play: nothing to hand on."""


# --- plans -----------------------------------------------------------------------------

_ACTUAL = re.compile(
    r"\(actual time=(?P<first>[\d.]+)\.\.(?P<last>[\d.]+) rows=\S+ loops=(?P<loops>\d+)\)"
)


@dataclass(slots=True)
class ExplainedStatement:
    sent: SentStatement
    plan: list[str]
    slowest: int | None = None  # the line of the slowest node in `plan`
    slowest_note: str = ""
    note: str = ""  # how the plan was obtained, when not as asked


@dataclass(slots=True)
class ExplainReport:
    method: str
    path: str
    status: int
    dialect: str
    statements: list[ExplainedStatement] = field(default_factory=list)
    skipped: int = 0  # BEGIN, COMMIT, savepoints: nothing to plan


_SUBPLAN_HEADING = re.compile(r"^(?P<indent>\s*)(?:SubPlan|InitPlan|CTE (?P<cte>\S+))")
_CTE_SCAN = re.compile(r"CTE Scan on (?P<name>\S+)")


def slowest_postgres_node(plan: Sequence[str]) -> tuple[int, float] | None:
    """The line of the node that took the most time of its own in EXPLAIN ANALYZE's text
    (its time less its children's, each times its loops), and that time in ms.

    A child is a node one level in: an `->` line, or the node under a `SubPlan`,
    `InitPlan` or `CTE name` heading, whose time its parent's includes. A `CTE Scan`
    includes the time of the CTE it reads, which is charged to the CTE's own node."""
    nodes: list[tuple[int, int, float]] = []  # (line, depth, total ms)
    heading: int | None = None
    cte_name: str | None = None
    cte_totals: dict[str, float] = {}
    for number, line in enumerate(plan):
        found = _SUBPLAN_HEADING.match(line)
        if found is not None and "->" not in line:
            heading, cte_name = len(found["indent"]), found["cte"]
            continue
        match = _ACTUAL.search(line)
        if match is None:
            continue
        total = float(match["last"]) * int(match["loops"])
        depth = line.index("->") if "->" in line else -1
        if heading is not None:
            depth = heading  # the heading's node sits where an `->` child would
            if cte_name is not None:
                cte_totals[cte_name] = total
            heading = cte_name = None
        nodes.append((number, depth, total))
    if not nodes:
        return None
    own: dict[int, float] = {}
    for i, (number, depth, total) in enumerate(nodes):
        subtree = []
        for node in nodes[i + 1 :]:
            if node[1] <= depth:
                break
            subtree.append(node)
        child_depth = min((d for _n, d, _t in subtree), default=0)
        children = sum(t for _n, d, t in subtree if d == child_depth)
        scan = _CTE_SCAN.search(plan[number])
        if scan is not None:
            children += cte_totals.get(scan["name"], 0.0)
        own[number] = max(total - children, 0.0)
    slowest = max(own, key=lambda n: own[n])
    return slowest, own[slowest]


def slowest_sqlite_node(plan: Sequence[str]) -> int | None:
    """SQLite's plans carry no timings: the likeliest cost is a full scan, then a temporary
    b-tree (a sort or DISTINCT without an index), then the first search."""
    for pattern in (r"\bSCAN (?!CONSTANT)", r"USE TEMP B-TREE", r"\bSEARCH\b"):
        for number, line in enumerate(plan):
            if re.search(pattern, line):
                return number
    return 0 if plan else None


async def _explain_on_postgres(url: str, sent: Sequence[SentStatement]) -> list[ExplainedStatement]:
    """Replay the statements in order under EXPLAIN (ANALYZE, BUFFERS), in one transaction
    that is rolled back; a statement that fails on replay (a key the request made, which the
    replay makes anew) gets the planner's estimate instead."""
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    explained = []
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for statement in sent:
                try:
                    async with conn.transaction():  # a savepoint: a failure undoes only it
                        rows = await conn.fetch(
                            "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, *statement.parameters
                        )
                    note = ""
                except asyncpg.PostgresError as exc:
                    rows = await conn.fetch("EXPLAIN " + statement.sql, *statement.parameters)
                    note = f"ANALYZE failed on replay ({type(exc).__name__}): planner's estimate"
                plan = [row[0] for row in rows]
                item = ExplainedStatement(statement, plan, note=note)
                found = slowest_postgres_node(plan)
                if found is not None:
                    item.slowest, ms = found
                    item.slowest_note = f"slowest node: {ms:.3f} ms of its own"
                elif plan:
                    item.slowest, item.slowest_note = 0, "no timings: estimate only"
                explained.append(item)
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    return explained


def _explain_on_sqlite(path: str, sent: Sequence[SentStatement]) -> list[ExplainedStatement]:
    conn = sqlite3.connect(path)
    try:
        explained = []
        for statement in sent:
            rows = conn.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.parameters)
            depth: dict[int, int] = {}
            plan = []
            for node_id, parent, _unused, detail in rows.fetchall():
                depth[node_id] = depth.get(parent, -1) + 1
                plan.append("  " * depth[node_id] + str(detail))
            item = ExplainedStatement(statement, plan)
            item.slowest = slowest_sqlite_node(plan)
            item.slowest_note = "likeliest cost (SQLite's plans carry no timings)"
            if not plan:
                item.note = "no plan: the statement reads no table (SQLite plans none)"
            explained.append(item)
        return explained
    finally:
        conn.close()


def _snapshot_sqlite(source: str, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included), via sqlite3's backup."""
    if not Path(source).is_file():
        raise ExplainRefused(f"no SQLite database at {source!r} (fastpost db upgrade makes it)")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


async def _user_id(db: Any, username: str) -> int:
    from sqlalchemy import select

    from fastpost.users.models import User

    row = await db.fetch_one(select(User.id).where(User.username == username))
    if row is None:
        raise ExplainRefused(f"no user named {username!r}")
    return int(row["id"])


async def _send(
    app: Any, method: str, path: str, headers: Mapping[str, str], body: Any
) -> tuple[int, list[SentStatement]]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://explain") as client:
        with capture_statements(app.state.observability.statements) as sent:
            response = await client.request(method, path, headers=headers, json=body)
    return response.status_code, sent


async def explain_request(
    settings: Settings,
    method: str,
    path: str,
    *,
    username: str | None = None,
    json_body: str | None = None,
) -> ExplainReport:
    """Send METHOD PATH once through the app, cache off, and plan every statement it sent
    (see the module docstring: nothing is changed)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from fastpost.app import create_app

    # The cache would answer from memory: the statements worth planning are the uncached ones.
    # Warnings (an N+1, a slow statement) still show; access lines would only repeat the
    # report's first line.
    settings = settings.model_copy(
        update={
            "cache": settings.cache.model_copy(update={"enabled": False}),
            "observability": settings.observability.model_copy(
                update={"access_log": False, "log_level": "WARNING"}
            ),
        }
    )
    body = json.loads(json_body) if json_body else None
    method = method.upper()
    with tempfile.TemporaryDirectory(prefix="fastpost-explain-") as scratch:
        if settings.db.is_sqlite:
            source = make_url(settings.db.url).database or ""
            snapshot = Path(scratch) / "snapshot.db"
            await asyncio.to_thread(_snapshot_sqlite, source, snapshot)
            url = make_url(settings.db.url).set(database=str(snapshot))
            settings = settings.model_copy(
                update={
                    "db": settings.db.model_copy(
                        update={"url": url.render_as_string(hide_password=False)}
                    )
                }
            )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            db = app.state.db
            headers = {}
            if username is not None:
                user_id = await _user_id(db, username)
                headers["Authorization"] = f"Bearer {app.state.tokens.issue(user_id).access_token}"
            if settings.db.is_sqlite:
                status, sent = await _send(app, method, path, headers, body)
            else:
                async with db.write_engine.connect() as conn:
                    outer = await conn.begin()
                    # SQLAlchemy sends BEGIN with the first statement: sent now, through
                    # asyncpg's transaction API, a write program's transaction nests in it.
                    await conn.execute(text("SELECT 1"))
                    raw = await conn.get_raw_connection()
                    app.state.db = _OneTransaction(db, conn, raw.driver_connection)
                    try:
                        status, sent = await _send(app, method, path, headers, body)
                    finally:
                        app.state.db = db
                        await outer.rollback()
        to_plan = [s for s in sent if explainable(s.sql)]
        report = ExplainReport(method, path, status, db.dialect, skipped=len(sent) - len(to_plan))
        if settings.db.is_sqlite:
            report.statements = await asyncio.to_thread(_explain_on_sqlite, str(snapshot), to_plan)
        else:
            report.statements = await _explain_on_postgres(settings.db.url, to_plan)
    return report


def _count(n: int) -> str:
    return f"{n} statement" if n == 1 else f"{n} statements"


def render_explain(report: ExplainReport, *, width: int = 120) -> str:
    """Each statement on one line, its parameters, its plan with the slowest node marked."""
    kind = "EXPLAIN (ANALYZE, BUFFERS)" if report.dialect == "postgresql" else "EXPLAIN QUERY PLAN"
    undone = (
        "the request and the replay were rolled back"
        if report.dialect == "postgresql"
        else "the request ran on a snapshot of the database"
    )
    lines = [
        f"{report.method} {report.path} -> {report.status}: {_count(len(report.statements))} "
        f"planned with {kind}, {report.skipped} transaction control skipped "
        f"(cache off; {undone}: nothing was changed)"
    ]
    for number, item in enumerate(report.statements, start=1):
        lines.append("")
        took = item.sent.seconds * 1000
        lines.append(f"[{number}] {one_line(item.sent.sql, width - 6)}")
        if item.sent.parameters:
            lines.append(f"    parameters: {one_line(repr(item.sent.parameters), width - 16)}")
        lines.append(f"    {took:.3f} ms in the request")
        if item.note:
            lines.append(f"    {item.note}")
        for i, plan_line in enumerate(item.plan):
            if i == item.slowest:
                lines.append(f" >> {plan_line}   << {item.slowest_note}")
            else:
                lines.append(f"    {plan_line}")
    return "\n".join(lines)
