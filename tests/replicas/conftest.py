"""One PostgreSQL primary with two streaming replicas for the whole session: replica-1
replays at once, replica-2 waits 2 s before applying (recovery_min_apply_delay), like a
replica under load. Apps are built per test on the migrated database `fastpost`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.cluster.postgres import PgNode
from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings
from tests.conftest import make_settings
from tests.helpers import (
    PgCluster,
    local_redis_url,
    postgres_cluster,
    postgres_missing_reason,
    wait_until,
)

DATABASE = "fastpost"
APPLY_DELAY_SECONDS = 2.0
# Redis for the positions of token clients; a database of its own, away from others' keys.
REDIS_URL = local_redis_url(11)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster(apply_delays=(None, f"{APPLY_DELAY_SECONDS:g}s")) as cluster:
        yield cluster


def db_url(node: PgNode) -> str:
    return node.url(DATABASE, driver="postgresql+asyncpg")


async def wait_for_replay(cluster: PgCluster, *, within: float = 15) -> None:
    """Until every replica has replayed what the primary has written so far."""
    primary = await asyncpg.connect(cluster.primary.url())
    try:
        target = await primary.fetchval("SELECT pg_current_wal_lsn()")
    finally:
        await primary.close()
    async with asyncio.timeout(within):
        for node in cluster.replicas:
            replica = await asyncpg.connect(node.url())
            try:
                replayed = "SELECT pg_last_wal_replay_lsn()"
                while await replica.fetchval(replayed) < target:  # noqa: ASYNC110 (a server's)
                    await asyncio.sleep(0.05)
            finally:
                await replica.close()


@pytest.fixture(scope="session")
async def replicated(pg_cluster: PgCluster) -> PgCluster:
    """The cluster, with the database `fastpost` migrated on the primary and replayed on
    every replica."""
    admin = await asyncpg.connect(pg_cluster.primary.url())
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    db = Database(DatabaseSettings(url=db_url(pg_cluster.primary)))
    try:
        await upgrade(db.write_engine, db.settings)
    finally:
        await db.dispose()
    await wait_for_replay(pg_cluster)
    return pg_cluster


async def wait_in_rotation(app: FastAPI, count: int, *, within: float = 15) -> None:
    """Until `count` replicas are in rotation. A new worker knows the primary's positions
    only from its start on: a replica behind it then (the delayed one, after a write) stays
    out until it has caught up, since its lag cannot be told yet from its last replayed
    transaction alone."""
    replicas = app.state.db.replicas.replicas
    await wait_until(lambda: sum(r.in_rotation for r in replicas) >= count, within)


AppMaker = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def make_app(replicated: PgCluster) -> AppMaker:
    """`async with make_app(replicas=[...], **db_settings) as (app, client)`: the app on the
    primary, reading from the given replica nodes (or URLs)."""

    @asynccontextmanager
    async def build(
        replicas: list[PgNode | str],
        *,
        redis: bool | str = True,
        cache: bool = True,
        in_rotation: bool = True,
        **db_settings: Any,
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        # `redis`: the machine's Redis, none, or the URL of another (a cluster's).
        redis_url = redis if isinstance(redis, str) else REDIS_URL if redis else None
        settings = make_settings(db_url(replicated.primary), redis_url=redis_url)
        urls = [r if isinstance(r, str) else db_url(r) for r in replicas]
        settings.db = settings.db.model_copy(update={"replica_urls": urls, **db_settings})
        settings.cache = settings.cache.model_copy(update={"enabled": cache})
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            if in_rotation and urls:
                await wait_in_rotation(app, len(urls))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield app, client

    return build
