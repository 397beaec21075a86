"""Sharded mode on two databases of the local PostgreSQL, and one unsharded beside them.

The databases are made once per session (`fp_shard_<uuid>_0`, `_1`, `_plain`), migrated,
the two shards prepared by init_shards, and dropped at the end; each test starts from
emptied tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import AuthSettings, DatabaseSettings, RateLimitSettings, Settings
from fastpost.shards.router import Shards
from fastpost.shards.setup import init_shards

POSTGRES_URL = os.environ.get("FASTPOST_TEST_POSTGRES_URL")
SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 8, "argon2_parallelism": 1}
TABLES = "likes, follows, post_tags, tags, comments, post_counts, posts, users"


def _url(database: str) -> str:
    assert POSTGRES_URL
    return (
        make_url(POSTGRES_URL)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


async def _admin(sql: str) -> None:
    engine = create_async_engine(
        _url(make_url(POSTGRES_URL or "").database or "postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def execute(url: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Run one statement straight on a database (not through the app); return its rows."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params or {})
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def shard_urls() -> AsyncIterator[dict[str, Any]]:
    if not POSTGRES_URL:
        pytest.skip("sharded mode needs PostgreSQL: set FASTPOST_TEST_POSTGRES_URL")
    prefix = f"fp_shard_{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}_0", f"{prefix}_1", f"{prefix}_plain"]
    for name in names:
        await _admin(f'CREATE DATABASE "{name}"')
    try:
        shards = [_url(names[0]), _url(names[1])]
        await init_shards(DatabaseSettings(url=shards[0], shards=shards))
        plain = Database(DatabaseSettings(url=_url(names[2])))
        await upgrade(plain.write_engine, plain.settings)
        await plain.dispose()
        yield {"shards": shards, "plain": _url(names[2])}
    finally:
        for name in names:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def emptied(shard_urls: dict[str, Any]) -> dict[str, Any]:
    for url in shard_urls["shards"]:
        await execute(url, f"TRUNCATE {TABLES}, user_directory")
    await execute(shard_urls["plain"], f"TRUNCATE {TABLES} RESTART IDENTITY")
    return shard_urls


def settings_for(url: str, shards: list[str] | None = None, **overrides: Any) -> Settings:
    overrides.setdefault("rate_limits", RateLimitSettings(enabled=False))
    return Settings(
        env="test",
        db=DatabaseSettings(url=url, shards=shards or [], pool_size=5, write_pool_size=5),
        auth=AuthSettings(secret_key=SECRET, **FAST_ARGON2),
        **overrides,
    )


@pytest.fixture
def sharded_settings(emptied: dict[str, Any]) -> Settings:
    return settings_for(emptied["shards"][0], emptied["shards"])


@pytest.fixture
async def sharded_app(sharded_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(sharded_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(sharded_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sharded_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def plain_client(emptied: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(emptied["plain"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
def shards(sharded_app: FastAPI) -> Shards:
    found: Shards = sharded_app.state.shards
    return found


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


@pytest.fixture
def touches(shards: Shards) -> Touches:
    return Touches(shards)


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


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


@pytest.fixture
def plain_api(plain_client: httpx.AsyncClient) -> Api:
    return Api(plain_client)
