"""2. The user overview (user, latest posts, friends): sequential awaits against
asyncio.gather, through fastpost's own overview service and its queries."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sqlalchemy import text

from fastpost.db import Database
from fastpost.lab.context import Lab
from fastpost.lab.measure import median
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.observability.statements import record_statements
from fastpost.pagination import Page
from fastpost.posts import service as posts_service
from fastpost.social import service as social_service
from fastpost.users import service as users_service


async def overview_sequential(*, db: Database, user_id: int) -> dict[str, Any]:
    """The same three reads as fastpost.social.service.overview, one after the other."""
    user = await users_service.get_profile(db=db, user_id=user_id)
    posts_page = await posts_service.list_posts(
        db=db,
        viewer_id=None,
        page=Page(social_service.OVERVIEW_POSTS, None, 0),
        author_id=user_id,
    )
    page = Page(social_service.OVERVIEW_FRIENDS, None, 0)
    # The overview's own friends statement (not list_friends, which adds a user check on
    # an empty page), so that both variants send exactly the same SQL.
    rows = await db.fetch_all(
        social_service._friends_statement(page.shape), {**page.params, "user_id": user_id}
    )
    friends = [social_service._summary(r) for r in rows[: social_service.OVERVIEW_FRIENDS]]
    return {"user": user, "latest_posts": posts_page["items"], "friends": friends}


async def overview_gathered(*, db: Database, user_id: int) -> dict[str, Any]:
    """fastpost's overview: the three reads under asyncio.gather, each on its own pooled
    connection (fastpost.db checks one out per read)."""
    return await social_service.overview(db=db, user_id=user_id, viewer_id=None)


async def busiest_users(db: Database, count: int) -> list[int]:
    """Users with the most follows, so that every read of the overview returns rows."""
    async with db.reader() as conn:
        rows = await conn.execute(
            text(
                "SELECT follower_id FROM follows GROUP BY follower_id "
                "ORDER BY count(*) DESC, follower_id LIMIT :n"
            ),
            {"n": count},
        )
        ids = [int(r[0]) for r in rows]
        if not ids:
            rows = await conn.execute(
                text("SELECT id FROM users ORDER BY id LIMIT :n"), {"n": count}
            )
            ids = [int(r[0]) for r in rows]
    return ids


async def run(lab: Lab) -> ExperimentResult:
    """Read the overview of the busiest users sequentially and with gather, interleaved."""
    db = lab.db
    user_ids = await busiest_users(db, lab.config.overview_users)
    result = ExperimentResult(
        key="gather",
        title="2. Sequential awaits vs asyncio.gather (user overview)",
        why="independent reads wait for the database one after another unless they overlap",
    )
    size = f"{len(user_ids)} users"
    variants = (
        ("sequential awaits", overview_sequential, False),
        ("asyncio.gather", overview_gathered, True),
    )
    answers: dict[str, list[dict[str, Any]]] = {}
    statements: dict[str, Counter[str]] = {}
    for name, _, _ in variants:
        answers[name], statements[name] = [], Counter()
    timings: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    # One unmeasured round first: it opens the pool connections gather needs (three at once)
    # and fills the statement caches, so that neither variant pays for set-up.
    for _, overview, _ in variants:
        for user_id in user_ids:
            await overview(db=db, user_id=user_id)
    # Interleaved, so that a change in the machine's load hits both alike.
    for round_ in range(max(1, lab.repeat)):
        for name, overview, _ in variants:
            for user_id in user_ids:
                with record_statements() as log:
                    started = time.perf_counter()
                    answer = await overview(db=db, user_id=user_id)
                    timings[name].append(time.perf_counter() - started)
                if round_ == 0:
                    answers[name].append(answer)
                    statements[name].update(log)
    for name, _, is_fix in variants:
        result.add(
            Measurement(
                name,
                size,
                median(timings[name]) * 1000,
                queries=round(sum(statements[name].values()) / max(1, len(user_ids))),
                is_fix=is_fix,
                details={"per": "overview (median)"},
            )
        )
    result.set_ratios()
    same_data = answers["sequential awaits"] == answers["asyncio.gather"]
    same_sql = statements["sequential awaits"] == statements["asyncio.gather"]
    result.extra = {"same_data": same_data, "same_statements": same_sql}
    ratio = result.variant("sequential awaits").ratio or 0
    if lab.dialect == "sqlite":
        result.add_note("lab.gather.note_sqlite")
    else:
        result.add_note("lab.gather.note_postgresql")
    result.verdict = (
        f"sequential takes {ratio:.2f}x the time of gather ({lab.dialect}); same data: "
        f"{'yes' if same_data else 'NO'}, same statements: {'yes' if same_sql else 'NO'}"
    )
    result.verdict_params = {
        "ratio": ratio,
        "dialect": lab.dialect,
        "same_data": "yes" if same_data else "no",
        "same_sql": "yes" if same_sql else "no",
    }
    return result
