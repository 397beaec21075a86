"""The database experiments measure what they claim: statement counts, equal answers, plans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from fastpost.lab import gather, indexes, n_plus_one, pagination
from fastpost.lab.context import Lab
from fastpost.pagination import Page
from fastpost.posts import service as posts_service
from tests.helpers import environment, migrate_and_seed


async def test_n_plus_one_sends_a_query_per_post_the_join_one_and_the_batches_two(
    lab: Lab,
) -> None:
    result = await n_plus_one.run(lab)

    posts = lab.config.n_plus_one_posts
    assert result.variant("query per post (N+1)").queries == posts + 1
    assert result.variant("joinedload (JOIN)").queries == 1
    assert result.variant("selectinload").queries == 2
    assert result.variant("batch WHERE id IN").queries == 2


async def test_sequential_and_gathered_overviews_send_the_same_queries_and_agree(
    lab: Lab,
) -> None:
    result = await gather.run(lab)

    assert result.extra == {"same_data": True, "same_statements": True}
    # The user, their latest posts, their friends.
    assert result.variant("sequential awaits").queries == 3
    assert result.variant("asyncio.gather").queries == 3


async def test_busiest_users_have_friends_to_show_in_the_overview(lab: Lab) -> None:
    [user_id] = await gather.busiest_users(lab.db, 1)

    overview = await gather.overview_gathered(db=lab.db, user_id=user_id)

    assert overview["user"]["id"] == user_id
    assert overview["latest_posts"] or overview["friends"]


async def test_offset_and_keyset_pages_are_one_query_each_and_pages_past_the_data_are_named(
    lab: Lab,
) -> None:
    result = await pagination.run(lab)

    for page in ("page 1", "page 3"):
        assert result.variant("OFFSET", page).queries == 1
        assert result.variant("keyset (cursor)", page).queries == 1
    beyond = result.variant("beyond the data", "page 1,000")
    assert beyond.time_ms is None
    assert "pages of 10" in beyond.note


async def test_keyset_cursor_continues_exactly_where_offset_would(lab: Lab) -> None:
    limit = 10
    second_by_offset = await posts_service.list_posts(
        db=lab.db, viewer_id=None, page=Page(limit, None, limit)
    )
    cursor = await pagination.cursor_before(lab, limit)
    second_by_cursor = await posts_service.list_posts(
        db=lab.db, viewer_id=None, page=Page(limit, cursor, 0)
    )

    assert second_by_cursor == second_by_offset
    assert len(second_by_cursor["items"]) == limit


async def test_without_its_index_the_query_scans_and_with_it_uses_the_index(lab: Lab) -> None:
    result = await indexes.run(lab)

    plan_without = result.extra["plan_without_index"]
    plan_with = result.extra["plan_with_index"]
    assert indexes.scans_table(plan_without)
    assert indexes.INDEX not in plan_without
    assert indexes.INDEX in plan_with
    assert not indexes.scans_table(plan_with)
    assert result.extra["scans_without_index"]
    assert result.extra["uses_index_with_it"]


async def test_the_dropped_index_is_back_after_the_experiment(lab: Lab) -> None:
    await indexes.run(lab)

    async with lab.db.reader() as conn:
        if lab.dialect == "postgresql":
            found = await conn.scalar(
                text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": indexes.INDEX}
            )
        else:
            found = await conn.scalar(
                text("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n"),
                {"n": indexes.INDEX},
            )
    assert found == 1


async def test_page_one_reports_the_same_statement_instead_of_a_ratio(lab: Lab) -> None:
    result = await pagination.run(lab)

    first = result.variant("OFFSET", "page 1")
    assert first.same_statement
    assert first.ratio is None
    deeper = result.variant("OFFSET", "page 3")
    assert not deeper.same_statement
    assert deeper.ratio is not None


def test_seeding_the_posts_the_hint_names_reaches_the_page(tmp_path: Path) -> None:
    # The seed makes some posts drafts: a hint of pages x limit posts falls short.
    rows = 3000
    env = environment(tmp_path)
    plan = ("--users", "40", "--follows", "0", "--likes", "0")
    migrate_and_seed(env, tmp_path, *plan, "--posts", "1000")
    seeded_published = _published(tmp_path)
    hint = pagination.posts_to_reach(rows, published=seeded_published, seeded=1000)
    (tmp_path / "data" / "fastpost.db").unlink()

    migrate_and_seed(env, tmp_path, *plan, "--posts", str(hint))

    assert seeded_published < 1000
    assert _published(tmp_path) >= rows


def _published(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "data" / "fastpost.db") as conn:
        row = conn.execute("SELECT count(*) FROM posts WHERE status = 'published'").fetchone()
    return int(row[0])
