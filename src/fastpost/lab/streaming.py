"""8. Reading many rows: all at once, page by page (keyset), or streamed from a server-side
cursor (`session.stream`), measured as peak Python memory (tracemalloc) and time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.db import table_of
from fastpost.lab.context import Lab
from fastpost.lab.measure import median_run, peak_memory
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.pagination import Cursor, keyset_page
from fastpost.posts.models import Post, PostStatus

# What each variant computes from the rows, so that all three provably read the same ones.
Totals = tuple[int, int]  # (rows, characters of content)


posts = table_of(Post)
_COLUMNS = (posts.c.id, posts.c.created_at, posts.c.title, posts.c.content)


def posts_statement() -> Select[Any]:
    """Published posts: the status filter lets every variant walk ix_posts_status_created
    in (created_at, id) order instead of sorting the table."""
    return select(*_COLUMNS).where(posts.c.status == PostStatus.published.value)


def ordered(rows: int) -> Select[Any]:
    return posts_statement().order_by(posts.c.created_at.desc(), posts.c.id.desc()).limit(rows)


async def load_all(session: AsyncSession, rows: int, batch: int) -> Totals:
    """The anti-pattern: every row in one list, then the work."""
    result = (await session.execute(ordered(rows))).all()
    return len(result), sum(len(r.content) for r in result)


async def paginate(session: AsyncSession, rows: int, batch: int) -> Totals:
    """Keyset pages of `batch` rows (fastpost.pagination): one short query per page."""
    count = chars = 0
    cursor: Cursor | None = None
    while count < rows:
        stmt = keyset_page(
            posts_statement(), (cursor is not None, False), posts.c.created_at, posts.c.id
        )
        limit = min(batch, rows - count)
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params |= {"cursor_created_at": cursor.created_at, "cursor_id": cursor.id}
        page = (await session.execute(stmt, params)).all()
        if not page:
            break
        count += len(page)
        chars += sum(len(r.content) for r in page)
        if len(page) < limit:  # a short page is the last one
            break
        cursor = Cursor(page[-1].created_at, page[-1].id)
    return count, chars


async def stream(session: AsyncSession, rows: int, batch: int) -> Totals:
    """One query, read `batch` rows at a time from a server-side cursor."""
    count = chars = 0
    result = await session.stream(ordered(rows).execution_options(yield_per=batch))
    async for partition in result.partitions():
        count += len(partition)
        chars += sum(len(r.content) for r in partition)
    return count, chars


Variant = Callable[[AsyncSession, int, int], Awaitable[Totals]]
VARIANTS: tuple[tuple[str, Variant, bool], ...] = (
    ("load all rows", load_all, False),
    ("keyset pages", paginate, False),
    ("session.stream", stream, True),
)


async def run(lab: Lab) -> ExperimentResult:
    """Read the same rows all at once, by keyset pages and streamed; peak memory and time."""
    rows, batch = lab.config.stream_rows, lab.config.stream_batch
    result = ExperimentResult(
        key="streaming",
        title="8. Many rows: load all vs paginate vs stream",
        why="holding every row at once costs memory in proportion to the table; pages and "
        "streams hold one batch",
        ratio_of="peak memory",
    )
    expected: Totals | None = None
    for name, read, is_fix in VARIANTS:

        async def action(read: Variant = read) -> Totals:
            # A transaction of its own: PostgreSQL keeps a server-side cursor only inside one.
            async with AsyncSession(lab.db.write_engine) as session, session.begin():
                return await read(session, rows, batch)

        measured = await median_run(action, lab.repeat)
        if expected is None:
            expected = measured.value
        elif measured.value != expected:
            raise AssertionError(f"{name} read {measured.value}, expected {expected}")
        memory = await peak_memory(action)
        result.add(
            Measurement(
                name,
                f"{measured.value[0]:,} rows",
                measured.seconds * 1000,
                queries=sum(
                    1 for s in measured.statements if s.lstrip().upper().startswith("SELECT")
                ),
                memory_bytes=memory,
                is_fix=is_fix,
                details={"batch": batch if name != "load all rows" else None},
            )
        )
    result.set_ratios("memory_bytes")
    everything = result.variant("load all rows")
    streamed = result.variant("session.stream")
    result.verdict = (
        f"loading {everything.size} at once peaks at {(everything.ratio or 0):.0f}x the memory "
        f"of streaming them in batches of {batch} "
        f"({everything.memory_bytes or 0:,} vs {streamed.memory_bytes or 0:,} bytes)"
    )
    result.verdict_params = {
        "size": everything.size,
        "ratio": everything.ratio or 0,
        "batch": batch,
        "everything": everything.memory_bytes or 0,
        "streamed": streamed.memory_bytes or 0,
    }
    return result
