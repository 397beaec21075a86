"""Sharded mode on two databases of the local PostgreSQL, and one unsharded beside them.

The databases are made once per session (`fp_shard_<uuid>_0`, `_1`, `_plain`), migrated,
the two shards prepared by init_shards, and dropped at the end; each test starts from
emptied tables.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings, Settings
from fastpost.shards.router import Shards
from fastpost.shards.setup import init_shards
from tests.helpers import scratch_databases
from tests.shards.helpers import (
    POSTGRES_URL,
    TABLES,
    Api,
    Touches,
    execute,
    settings_for,
)


@pytest.fixture(scope="session")
async def shard_urls() -> AsyncIterator[dict[str, Any]]:
    if not POSTGRES_URL:
        pytest.skip("sharded mode needs PostgreSQL: set FASTPOST_TEST_POSTGRES_URL")
    async with scratch_databases(f"fp_shard_{uuid.uuid4().hex[:10]}", 3) as urls:
        shards, plain_url = urls[:2], urls[2]
        await init_shards(DatabaseSettings(url=shards[0], shards=shards))
        plain = Database(DatabaseSettings(url=plain_url))
        await upgrade(plain.write_engine, plain.settings)
        await plain.dispose()
        yield {"shards": shards, "plain": plain_url}


@pytest.fixture(scope="session")
async def four_shard_urls(shard_urls: dict[str, Any]) -> AsyncIterator[list[str]]:
    """Four more databases, prepared as the shards of another app."""
    async with scratch_databases(f"fp_shard_{uuid.uuid4().hex[:10]}", 4) as urls:
        await init_shards(DatabaseSettings(url=urls[0], shards=urls))
        yield urls


@pytest.fixture
async def emptied(shard_urls: dict[str, Any]) -> dict[str, Any]:
    for url in shard_urls["shards"]:
        await execute(url, f"TRUNCATE {TABLES}, user_directory")
    await execute(shard_urls["plain"], f"TRUNCATE {TABLES} RESTART IDENTITY")
    return shard_urls


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


@pytest.fixture
def touches(shards: Shards) -> Touches:
    return Touches(shards)


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


@pytest.fixture
def plain_api(plain_client: httpx.AsyncClient) -> Api:
    return Api(plain_client)
