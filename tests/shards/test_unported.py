"""What sharded mode does not serve yet answers 501, and says so."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from fastpost.errors import install_error_handlers
from fastpost.settings import DatabaseSettings
from fastpost.shards.api import refuse_unported
from tests.shards.helpers import Api


def _unsharded_routers() -> tuple[APIRouter, ...]:
    from fastpost.comments.router import router as comments_router
    from fastpost.posts.router import router as posts_router
    from fastpost.posts.router import tags_router, user_posts_router
    from fastpost.social.router import feed_router
    from fastpost.social.router import router as social_router
    from fastpost.users.router import auth_router, users_router

    return (
        posts_router,
        users_router,
        comments_router,
        tags_router,
        feed_router,
        user_posts_router,
        social_router,
        auth_router,
    )


def test_every_native_operation_is_served_in_sharded_mode() -> None:
    assert refuse_unported(FastAPI(), _unsharded_routers()) == []


async def test_an_operation_sharded_mode_lacks_answers_501_with_its_name() -> None:
    later = APIRouter(prefix="/posts")

    @later.get("/trending")
    async def trending() -> list[int]:
        return []

    app = FastAPI()
    install_error_handlers(app)
    assert refuse_unported(app, [*_unsharded_routers(), later]) == [("/posts/trending", "GET")]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/posts/trending")
    assert response.status_code == 501
    assert response.json()["detail"] == "GET /posts/trending is not available in sharded mode yet"


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


async def test_the_sharded_app_documents_its_own_routes(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/posts/", "/posts/{post_id}", "/feed", "/auth/register"} <= set(paths)
    # The RealWorld API over the sharded services (fastpost.shards.realworld).
    assert {"/api/articles", "/api/articles/{slug}", "/api/articles/feed"} <= set(paths)
