"""4. OFFSET pagination against keyset (cursor) pagination, at growing page numbers,
through fastpost's own list_posts and its cursors."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import text

from fastpost import messages
from fastpost.lab.context import Lab
from fastpost.lab.measure import median_run
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.pagination import Cursor, Page
from fastpost.posts import service as posts_service
from fastpost.posts.models import PostStatus


async def published_count(lab: Lab) -> int:
    async with lab.db.reader() as conn:
        return int(
            await conn.scalar(
                text("SELECT count(*) FROM posts WHERE status = :s"),
                {"s": PostStatus.published.value},
            )
            or 0
        )


def posts_to_reach(rows: int, *, published: int, seeded: int) -> int:
    """Posts to seed so that at least `rows` are published: the seed makes a share of them
    drafts (about 5 %), measured here from the database at hand, with 2 % to spare."""
    share = published / seeded if published and seeded else 0.9
    return math.ceil(rows / share * 1.02)


async def cursor_before(lab: Lab, offset: int) -> Cursor:
    """The cursor a client holds after reading the first `offset` posts: the last row of the
    previous page. Found once with OFFSET (set-up, not measured), as if the client had
    walked there page by page."""
    async with lab.db.reader() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT created_at, id FROM posts WHERE status = :s "
                    "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET :o"
                ),
                {"s": PostStatus.published.value, "o": offset - 1},
            )
        ).one()
    created_at = row[0]
    if isinstance(created_at, str):  # SQLite through text(): no type to convert it
        created_at = datetime.fromisoformat(created_at)
    return Cursor(created_at, int(row[1]))


async def run(lab: Lab) -> ExperimentResult:
    """Read each configured page by OFFSET and by cursor through list_posts."""
    limit = lab.config.page_size
    total = await published_count(lab)
    last_page = -(-total // limit)
    result = ExperimentResult(
        key="pagination",
        title="4. Pagination: OFFSET vs keyset",
        why="OFFSET reads and throws away every row before the page; a cursor enters the "
        "index where the previous page ended",
    )
    for number in lab.config.pages:
        size = f"page {number:,}"
        if number > last_page:
            posts = posts_to_reach(number * limit, published=total, seeded=lab.config.plan.posts)
            params = {"total": total, "pages": last_page, "limit": limit, "posts": posts}
            result.add(
                Measurement(
                    "beyond the data",
                    size,
                    None,
                    note=messages.text("lab.pagination.beyond", "en", **params),
                    note_key="lab.pagination.beyond",
                    note_params=params,
                )
            )
            continue
        offset = (number - 1) * limit
        cursor = await cursor_before(lab, offset) if offset else None
        by_offset = Page(limit, None, offset)
        by_cursor = Page(limit, cursor, 0)

        async def offset_page(page: Page = by_offset) -> object:
            return await posts_service.list_posts(db=lab.db, viewer_id=None, page=page)

        async def keyset_page(page: Page = by_cursor) -> object:
            return await posts_service.list_posts(db=lab.db, viewer_id=None, page=page)

        offset_run = await median_run(offset_page, lab.repeat)
        keyset_run = await median_run(keyset_page, lab.repeat)
        if offset_run.value != keyset_run.value:
            raise AssertionError(f"OFFSET and keyset returned different posts for {size}")
        # Page 1 has no cursor and no offset: one SQL text, so a ratio would be noise.
        same = offset_run.statements == keyset_run.statements
        for name, measured, is_fix in (
            ("OFFSET", offset_run, False),
            ("keyset (cursor)", keyset_run, True),
        ):
            result.add(
                Measurement(
                    name,
                    size,
                    measured.seconds * 1000,
                    queries=len(measured.statements),
                    is_fix=is_fix,
                    details={"rows_skipped": offset if name == "OFFSET" else 0},
                    same_statement=same and not is_fix,
                )
            )
    result.set_ratios()
    measured_pages = [
        m for m in result.measurements if m.variant == "OFFSET" and not m.same_statement
    ]
    if measured_pages:
        deepest = measured_pages[-1]
        result.verdict = (
            f"at {deepest.size} OFFSET takes {(deepest.ratio or 0):.1f}x the keyset query "
            f"({total:,} published posts, {limit} per page)"
        )
        result.verdict_params = {
            "page": deepest.size,
            "ratio": deepest.ratio or 0,
            "total": total,
            "limit": limit,
        }
    else:
        result.verdict = messages.text("lab.pagination.verdict_none", "en")
    return result
