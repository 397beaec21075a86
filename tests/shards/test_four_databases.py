"""The same lists over four databases (8 logical shards each) as over one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.settings import DatabaseSettings
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import ShardMapMissing, load_shard_map
from tests.shards.helpers import TABLES, Api, execute, same_data, settings_for, shapes


@pytest.fixture
async def four(
    four_shard_urls: list[str], emptied: dict[str, Any]
) -> AsyncIterator[tuple[Api, Shards]]:
    """An app sharded over the four databases, and its shards."""
    for url in four_shard_urls:
        await execute(url, f"TRUNCATE {TABLES}, user_directory")
    app = create_app(settings_for(four_shard_urls[0], four_shard_urls))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client), app.state.shards


async def test_lists_over_four_databases_page_as_on_one(
    four: tuple[Api, Shards], plain_api: Api
) -> None:
    api, shards = four
    made = await same_data(api, plain_api)
    assert shards.map.logical_shards_of(3) == [3, 7, 11, 15, 19, 23, 27, 31]
    homes = {shards.index_of(user_id) for user_id, _ in made["sharded"]["users"].values()}
    assert len(homes) >= 3
    reader = made["sharded"]["users"]["reader"][1]
    plain_reader = made["plain"]["users"]["reader"][1]
    for path, headers, plain_headers in (
        ("/posts/", None, None),
        ("/posts/", reader, plain_reader),
        ("/feed", reader, plain_reader),
    ):
        for limit in (1, 4):
            sharded = await api.all_pages(path, headers=headers, limit=limit)
            plain = await plain_api.all_pages(path, headers=plain_headers, limit=limit)
            assert shapes(sharded) == shapes(plain), (path, limit)


async def test_an_app_without_a_shard_map_refuses_to_start_and_says_why(
    emptied: dict[str, Any],
) -> None:
    # The unsharded database of these tests has the table (migration 0007), empty.
    db = Database(DatabaseSettings(url=emptied["plain"]))
    try:
        with pytest.raises(ShardMapMissing, match="fastpost shards init"):
            await load_shard_map(db, 2)
    finally:
        await db.dispose()
