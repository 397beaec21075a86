"""Helpers of the sharded-mode tests (fixtures are in conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastpost.settings import AuthSettings, DatabaseSettings, RateLimitSettings, Settings
from fastpost.shards.router import Shards

POSTGRES_URL = os.environ.get("FASTPOST_TEST_POSTGRES_URL")
SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8, "argon2_parallelism": 1}
TABLES = "likes, follows, post_tags, tags, comments, post_counts, posts, users"


async def execute(url: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Run one statement straight on a database (not through the app); return its rows."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params or {})
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def settings_for(url: str, shards: list[str] | None = None, **overrides: Any) -> Settings:
    overrides.setdefault("rate_limits", RateLimitSettings(enabled=False))
    return Settings(
        env="test",
        db=DatabaseSettings(url=url, shards=shards or [], pool_size=5, write_pool_size=5),
        auth=AuthSettings(secret_key=SECRET, **FAST_ARGON2),
        **overrides,
    )


class Touches:
    """How many times each database of the shards was used (a read, a write program, a
    transaction, an ad-hoc reader), counted on the Database objects themselves."""

    def __init__(self, shards: Shards) -> None:
        self.counts = [0] * len(shards.databases)
        for index, db in enumerate(shards.databases):
            for name in ("fetch_all", "write", "transaction", "reader"):
                setattr(db, name, self._counted(index, getattr(db, name)))

    def _counted(self, index: int, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[index] += 1
            return method(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.counts = [0] * len(self.counts)

    def touched(self) -> list[int]:
        """The indexes of the databases used since the last reset."""
        return [index for index, count in enumerate(self.counts) if count]


class Api:
    """Users and posts made through the API of one app (sharded or not)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def user(self, username: str) -> tuple[int, dict[str, str]]:
        """Register and log in; return the id and the Authorization header."""
        registered = await self.client.post(
            "/auth/register",
            json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        )
        assert registered.status_code == 201, registered.text
        login = await self.client.post(
            "/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        return registered.json()["id"], {"Authorization": f"Bearer {token}"}

    async def post(self, headers: dict[str, str], title: str, **fields: Any) -> int:
        response = await self.client.post(
            "/posts/", json={"title": title, "content": f"About {title}", **fields}, headers=headers
        )
        assert response.status_code == 201, response.text
        post_id: int = response.json()["id"]
        return post_id

    async def follow(self, headers: dict[str, str], user_id: int) -> None:
        response = await self.client.post(f"/users/{user_id}/follow", headers=headers)
        assert response.status_code == 200, response.text

    async def all_pages(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        limit: int = 3,
        query: dict[str, Any] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Every page of a keyset list, following next_cursor to the end."""
        pages: list[list[dict[str, Any]]] = []
        params: dict[str, Any] = {**(query or {}), "limit": limit}
        while True:
            response = await self.client.get(path, params=params, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body["items"])
            if body["next_cursor"] is None:
                return pages
            params = {**(query or {}), "limit": limit, "cursor": body["next_cursor"]}


NAMES = ["ana", "bruno", "chloe", "dmitri", "eve", "farid"]


def shapes(pages: list[list[dict[str, Any]]]) -> list[list[tuple[Any, ...]]]:
    """What a page shows, without the ids (each app numbers its rows its own way)."""
    return [
        [
            (
                item["title"],
                item["author"]["username"],
                item["tags"],
                item["likes_count"],
                item["liked_by_me"],
            )
            for item in page
        ]
        for page in pages
    ]


async def same_data(api: Api, plain_api: Api) -> dict[str, Any]:
    """The same users, posts, tags, likes and follows through each app's API, in the same
    order (each app's timestamps then sort alike)."""
    made: dict[str, Any] = {}
    for key in ("sharded", "plain"):
        made[key] = {"users": {}, "posts": []}
    for name in [*NAMES, "reader"]:
        for app_api, key in ((api, "sharded"), (plain_api, "plain")):
            made[key]["users"][name] = await app_api.user(name)
    for n in range(12):
        author = NAMES[(n * 5) % len(NAMES)]
        fields = {"tags": ["even"] if n % 2 == 0 else ["odd"]}
        if n == 7:
            fields["status"] = "draft"
        for app_api, key in ((api, "sharded"), (plain_api, "plain")):
            _, headers = made[key]["users"][author]
            made[key]["posts"].append(await app_api.post(headers, f"Post {n}", **fields))
    for app_api, key in ((api, "sharded"), (plain_api, "plain")):
        _, reader = made[key]["users"]["reader"]
        for n in (0, 3, 4, 9):
            liked = await app_api.client.post(
                f"/posts/{made[key]['posts'][n]}/like", headers=reader
            )
            assert liked.status_code == 200, liked.text
        for name in ("ana", "chloe", "eve", "farid"):
            await app_api.follow(reader, made[key]["users"][name][0])
        # Friends of the reader: those who follow back.
        for name in ("ana", "eve", "bruno"):
            await app_api.follow(made[key]["users"][name][1], made[key]["users"]["reader"][0])
    return made
