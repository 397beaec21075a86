"""`fastpost shards init` takes in a database that served unsharded: its users log in, and
new rows are numbered past the old ones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings
from fastpost.shards.setup import ShardsMisplaced, init_shards
from tests.helpers import admin_execute as admin
from tests.helpers import postgres_url as url_of
from tests.shards.helpers import PASSWORD, Api, execute, settings_for


@pytest.fixture
async def two_new_databases(shard_urls: object) -> AsyncIterator[list[str]]:
    prefix = f"fp_shard_{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}_old", f"{prefix}_new"]
    for name in names:
        await admin(f'CREATE DATABASE "{name}"')
    try:
        yield [url_of(name) for name in names]
    finally:
        for name in names:
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_database_that_served_unsharded_becomes_the_first_shard(
    two_new_databases: list[str],
) -> None:
    old, new = two_new_databases
    db = Database(DatabaseSettings(url=old))
    await upgrade(db.write_engine, db.settings)
    await db.dispose()
    app = create_app(settings_for(old))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client)
            old_users = [await api.user(f"veteran{n}") for n in range(3)]
            old_posts = [await api.post(headers, "Before") for _, headers in old_users]

    with pytest.raises(ShardsMisplaced, match="first"):
        await init_shards(DatabaseSettings(url=new, shards=[new, old]))
    assert await execute(new, "SELECT count(*) FROM shard_map") == [(0,)]  # no map written
    await init_shards(DatabaseSettings(url=old, shards=[old, new]))

    app = create_app(settings_for(old, [old, new]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client)
            login = await client.post(
                "/auth/login", json={"username": "veteran1", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            post_id = await api.post(headers, "After")
            assert post_id > max(old_posts)
            for old_post in old_posts:
                assert (await client.get(f"/posts/{old_post}")).status_code == 200
            taken = await client.post(
                "/auth/register",
                json={"username": "VETERAN2", "email": "x@example.com", "password": PASSWORD},
            )
            assert taken.status_code == 409
            # New users spread over both databases (their names hash to every logical shard).
            shards = app.state.shards
            homes = {shards.index_of((await api.user(f"newcomer{n}"))[0]) for n in range(12)}
            assert homes == {0, 1}
