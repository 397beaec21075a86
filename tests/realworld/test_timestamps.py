"""The API's timestamps: always milliseconds and a zone, whatever the driver hands back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from fastpost.posts.models import Post
from fastpost.realworld.service import iso_ms
from tests.conftest import Factory
from tests.helpers import database_of
from tests.realworld.test_router import new_article


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC),  # asyncpg
        datetime(2026, 1, 2, 3, 4, 5, 678999),  # SQLite: naive, stored as UTC
        datetime(2026, 1, 2, 5, 4, 5, 678999, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_timestamps_are_utc_with_milliseconds_truncated(moment: datetime) -> None:
    assert iso_ms(moment) == "2026-01-02T03:04:05.678Z"


def test_a_whole_second_still_shows_its_milliseconds() -> None:
    assert iso_ms(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000Z"),
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2026-12-31T23:59:59.999Z"),
    ],
)
async def test_articles_show_their_timestamps_as_iso_ms_does_on_every_backend(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, stored: datetime, shown: str
) -> None:
    # PostgreSQL writes them in the statement (to_char), SQLite's come back as datetimes.
    assert iso_ms(stored) == shown
    user = await factory.user()
    article = await new_article(client, user)
    async with database_of(app, user.id).transaction() as session:
        await session.execute(
            update(Post)
            .where(Post.slug == article["slug"])
            .values(created_at=stored, updated_at=stored)
        )
    one = (await client.get(f"/api/articles/{article['slug']}")).json()["article"]
    [listed] = (await client.get(f"/api/articles?author={user.username}")).json()["articles"]
    for shape in (one, listed):
        assert (shape["createdAt"], shape["updatedAt"]) == (shown, shown)
