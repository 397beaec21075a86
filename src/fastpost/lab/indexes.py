"""5. A query without its index against the same query with it: the index is dropped inside
a transaction that is rolled back (DDL is transactional in PostgreSQL and in SQLite), so the
database is left as it was."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from fastpost.lab.context import Lab
from fastpost.lab.measure import median
from fastpost.lab.result import ExperimentResult, Measurement

INDEX = "ix_posts_author_created"
# An author's latest posts (the shape of GET /users/{id}/posts). No other index of posts
# starts with author_id, so without this one the database reads the whole table and sorts.
QUERY = (
    "SELECT id, title, created_at FROM posts WHERE author_id = :author_id "
    "ORDER BY created_at DESC, id DESC LIMIT 20"
)


async def busiest_author(conn: AsyncConnection) -> int:
    author_id = await conn.scalar(
        text(
            "SELECT author_id FROM posts GROUP BY author_id "
            "ORDER BY count(*) DESC, author_id LIMIT 1"
        )
    )
    if author_id is None:
        raise RuntimeError("the index experiment needs at least one post")
    return int(author_id)


def tagged(sql: str, phase: str) -> str:
    """The statement with a comment naming the phase. SQLite's driver caches prepared
    statements by their text, and a statement prepared before the DROP INDEX in the same
    transaction kept its old plan (seen with EXPLAIN QUERY PLAN): new text, new plan."""
    return f"{sql} /* {phase} */"


async def explain(conn: AsyncConnection, dialect: str, params: dict[str, Any], phase: str) -> str:
    """The plan of QUERY: EXPLAIN ANALYZE on PostgreSQL (it runs the query), EXPLAIN QUERY
    PLAN on SQLite."""
    if dialect == "postgresql":
        rows = await conn.execute(
            text("EXPLAIN (ANALYZE, BUFFERS) " + tagged(QUERY, phase)), params
        )
        return "\n".join(str(r[0]) for r in rows)
    rows = await conn.execute(text("EXPLAIN QUERY PLAN " + tagged(QUERY, phase)), params)
    return "\n".join(str(r[-1]) for r in rows)


async def time_lookups(
    conn: AsyncConnection, params: dict[str, Any], lookups: int, phase: str
) -> tuple[float, int]:
    """Median seconds of QUERY over `lookups` runs, and the rows it returned."""
    seconds: list[float] = []
    rows = 0
    query = text(tagged(QUERY, phase))
    for _ in range(max(1, lookups)):
        started = time.perf_counter()
        rows = len((await conn.execute(query, params)).all())
        seconds.append(time.perf_counter() - started)
    return median(seconds), rows


def uses_index(plan: str) -> bool:
    return INDEX in plan


def scans_table(plan: str) -> bool:
    """True when the plan reads the whole posts table (SQLite: SCAN; PostgreSQL: Seq Scan)."""
    return "SCAN posts" in plan or "Seq Scan on posts" in plan


async def run(lab: Lab) -> ExperimentResult:
    """Time and EXPLAIN an author's latest posts with and without their index."""
    dialect = lab.dialect
    result = ExperimentResult(
        key="index",
        title="5. Query without its index vs with it",
        why="without an index on the filtered column the database reads every row to find a few",
    )
    engine = lab.db.write_engine
    lookups = lab.config.index_lookups
    async with engine.connect() as conn:
        # One transaction for both variants: the index is dropped in it and put back by the
        # rollback (fastpost's SQLite writer begins with BEGIN IMMEDIATE).
        transaction = await conn.begin()
        try:
            params = {"author_id": await busiest_author(conn)}
            total = int(await conn.scalar(text("SELECT count(*) FROM posts")) or 0)
            with_plan = await explain(conn, dialect, params, "with index")
            with_seconds, rows = await time_lookups(conn, params, lookups, "with index")
            await conn.execute(text(f"DROP INDEX {INDEX}"))
            without_plan = await explain(conn, dialect, params, "without index")
            without_seconds, rows_without = await time_lookups(
                conn, params, lookups, "without index"
            )
        finally:
            await transaction.rollback()
    if rows != rows_without:
        raise AssertionError("the query returned different rows without its index")
    size = f"{rows} of {total:,} posts"
    result.add(
        Measurement(
            f"without {INDEX}",
            size,
            without_seconds * 1000,
            queries=1,
            details={"scan": scans_table(without_plan)},
        )
    )
    result.add(
        Measurement(
            f"with {INDEX}",
            size,
            with_seconds * 1000,
            queries=1,
            is_fix=True,
            details={"scan": scans_table(with_plan)},
        )
    )
    result.set_ratios()
    result.extra = {
        "query": QUERY,
        "params": params,
        "plan_without_index": without_plan,
        "plan_with_index": with_plan,
        "scans_without_index": scans_table(without_plan) and not uses_index(without_plan),
        "uses_index_with_it": uses_index(with_plan),
    }
    for label, plan in (("without", without_plan), ("with", with_plan)):
        lines = "\n".join(f"    {line}" for line in plan.splitlines())
        result.notes.append(f"plan {label} the index:\n{lines}")
    ratio = result.variant(f"without {INDEX}").ratio or 0
    result.verdict = (
        f"an author's latest {rows} posts take {ratio:.1f}x as long without the index "
        f"({total:,} posts in the table)"
    )
    result.verdict_params = {"rows": rows, "ratio": ratio, "total": total}
    return result
