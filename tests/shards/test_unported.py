"""What sharded mode does not serve yet answers 501, and says so."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastpost.settings import DatabaseSettings
from tests.shards.conftest import Api


async def test_routes_not_ported_yet_answer_501(api: Api) -> None:
    _, headers = await api.user("early")
    await api.post(headers, "Early")
    for viewer in (None, headers):
        response = await api.client.get("/posts/search", params={"q": "early"}, headers=viewer)
        assert response.status_code == 501, response.text
        assert response.json()["detail"] == (
            "GET /posts/search is not available in sharded mode yet"
        )


def test_search_is_the_only_native_operation_not_ported_yet() -> None:
    from fastapi import FastAPI

    from fastpost.comments.router import router as comments_router
    from fastpost.posts.router import router as posts_router
    from fastpost.posts.router import tags_router, user_posts_router
    from fastpost.shards.api import refuse_unported
    from fastpost.social.router import feed_router
    from fastpost.social.router import router as social_router
    from fastpost.users.router import auth_router, users_router

    unsharded = (
        posts_router,
        users_router,
        comments_router,
        tags_router,
        feed_router,
        user_posts_router,
        social_router,
        auth_router,
    )
    assert refuse_unported(FastAPI(), unsharded) == [("/posts/search", "GET")]


async def test_the_realworld_api_is_not_mounted_in_sharded_mode(api: Api) -> None:
    assert (await api.client.get("/api/articles")).status_code == 404


def test_sharded_mode_refuses_sqlite() -> None:
    with pytest.raises(ValidationError, match="needs PostgreSQL"):
        DatabaseSettings(shards=["sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///b.db"])


def test_sharded_mode_reads_its_databases_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastpost.settings import Settings

    urls = ["postgresql+asyncpg://h/a", "postgresql+asyncpg://h/b"]
    monkeypatch.setenv(
        "FASTPOST_DB__SHARDS", '["postgresql+asyncpg://h/a", "postgresql+asyncpg://h/b"]'
    )
    assert Settings(_env_file=None).db.shards == urls  # type: ignore[call-arg]
