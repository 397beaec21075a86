"""`fastpost shards move` and `rebalance`: a logical shard changes database while the apps
serve, on databases of their own (the moves change the shard map)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.settings import CacheSettings, DatabaseSettings, Settings
from fastpost.shards import move
from fastpost.shards.move import move_shard, rebalance
from fastpost.shards.router import Shards
from fastpost.shards.setup import init_shards
from fastpost.shards.shard_map import (
    FROZEN,
    LOGICAL_SHARDS,
    READY,
    load_shard_map,
    logical_shard_for_username,
    set_entry,
)
from tests.helpers import environment, fastpost, local_redis_url, scratch_databases
from tests.shards.helpers import (
    POSTGRES_URL,
    TABLES,
    Api,
    Touches,
    execute,
    settings_for,
)

REDIS_URL = local_redis_url(13)


@pytest.fixture(scope="module")
async def move_urls() -> AsyncIterator[list[str]]:
    """Three databases: the first two prepared as the shards, the third left to be added."""
    if not POSTGRES_URL:
        pytest.skip("sharded mode needs PostgreSQL: set FASTPOST_TEST_POSTGRES_URL")
    async with scratch_databases(f"fp_move_{uuid.uuid4().hex[:10]}", 3) as urls:
        await init_shards(DatabaseSettings(url=urls[0], shards=urls[:2]))
        yield urls


@pytest.fixture
async def urls(move_urls: list[str]) -> list[str]:
    """Emptied, with the round-robin map over the first two back in force."""
    for url in move_urls[:2]:
        await execute(url, f"TRUNCATE {TABLES}, user_directory")
    await execute(
        move_urls[0],
        "UPDATE shard_map SET database = logical % 2, state = 'ready', version = version + 1",
    )
    await execute(move_urls[0], "DELETE FROM shard_map_instances")
    return move_urls


def _settings(urls: list[str], interval: float, **overrides: Any) -> Settings:
    settings = settings_for(urls[0], urls, **overrides)
    settings.db = settings.db.model_copy(update={"shard_map_check_seconds": interval})
    return settings


class Served:
    """An app with its lifespan running and a client on it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.api = Api(client)

    @property
    def shards(self) -> Shards:
        found: Shards = self.app.state.shards
        return found


async def _serve(settings: Settings, stack: AsyncExitStack) -> Served:
    app = create_app(settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    )
    return Served(app, client)


def _names_on(logical: int, count: int, prefix: str) -> list[str]:
    """Usernames that live on a logical shard (their hash picks it)."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        n += 1
        name = f"{prefix}{n}"
        if logical_shard_for_username(name) == logical:
            found.append(name)
    return found


async def _rows_of(url: str, logical: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table, column in (
        ("users", "id"),
        ("posts", "id"),
        ("likes", "post_id"),
        ("comments", "post_id"),
        ("post_tags", "post_id"),
    ):
        ((n,),) = await execute(
            url, f"SELECT count(*) FROM {table} WHERE {column} >> 48 = :l", {"l": logical}
        )
        counts[table] = int(n)
    return counts


async def _wait_for(condition: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


MOVING, STAYING = 4, 5  # logical shards: 4 on database 0, 5 on database 1


async def test_a_move_under_writes_loses_nothing_and_fails_no_request(urls: list[str]) -> None:
    async with AsyncExitStack() as stack:
        served = await _serve(_settings(urls[:2], 0.1), stack)
        api = served.api
        movers = [await api.user(n) for n in _names_on(MOVING, 3, "mover")]
        stayers = [await api.user(n) for n in _names_on(STAYING, 2, "stayer")]
        everyone = movers + stayers
        posts = [await api.post(headers, "Before") for _, headers in everyone]
        created: list[tuple[int, int]] = []  # (author, post) acknowledged 201
        liked: set[tuple[int, int]] = set()
        followed: set[tuple[int, int]] = set()
        statuses: list[int] = []
        moved = asyncio.Event()

        async def writer(n: int) -> None:
            rng = random.Random(n)
            after_move = 0
            while after_move < 3:
                user_id, headers = everyone[n % len(everyone)]
                response = await served.client.post(
                    "/posts/", json={"title": f"Load {n}", "content": "x"}, headers=headers
                )
                statuses.append(response.status_code)
                if response.status_code == 201:
                    created.append((user_id, response.json()["id"]))
                post_id = rng.choice(posts)
                response = await served.client.post(f"/posts/{post_id}/like", headers=headers)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    liked.add((user_id, post_id))
                other, _ = rng.choice(everyone)
                if other != user_id:
                    response = await served.client.post(f"/users/{other}/follow", headers=headers)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        followed.add((user_id, other))
                if moved.is_set():
                    after_move += 1

        lines: list[str] = []

        async def mover() -> None:
            await asyncio.sleep(0.2)
            await move_shard(_settings(urls[:2], 0.1).db, MOVING, 1, say=lines.append)
            moved.set()

        await asyncio.gather(mover(), *(writer(n) for n in range(6)))

        assert set(statuses) <= {200, 201}, statuses
        assert served.shards.map.databases[MOVING] == 1
        assert any("checksums equal" in line for line in lines), lines
        # Nothing of the shard left behind; every acknowledged write on its new database.
        assert await _rows_of(urls[0], MOVING) == dict.fromkeys(
            ("users", "posts", "likes", "comments", "post_tags"), 0
        )
        mover_ids = {user_id for user_id, _ in movers}
        on_new = await execute(urls[1], "SELECT id FROM posts WHERE id >> 48 = :l", {"l": MOVING})
        acknowledged = {post for author, post in created if author in mover_ids}
        before = {post for post in posts if post >> 48 == MOVING}
        assert {row[0] for row in on_new} == acknowledged | before
        likes = await execute(
            urls[1], "SELECT user_id, post_id FROM likes WHERE post_id >> 48 = :l", {"l": MOVING}
        )
        assert {tuple(row) for row in likes} == {pair for pair in liked if pair[1] >> 48 == MOVING}
        for follower, followee in followed:
            for user in (follower, followee):
                url = urls[served.shards.index_of(user)]
                found = await execute(
                    url,
                    "SELECT 1 FROM follows WHERE follower_id = :a AND followee_id = :b",
                    {"a": follower, "b": followee},
                )
                assert found, (follower, followee, user)


async def test_lists_show_a_copied_shard_s_posts_once_before_and_after_the_switch(
    urls: list[str],
) -> None:
    # Between the copy and the delete, a logical shard's rows are on two databases: a list
    # that asks every database must take each row from the one the map names only.
    async with AsyncExitStack() as stack:
        settings = _settings(urls[:2], 0.1, cache=CacheSettings(enabled=False))
        served = await _serve(settings, stack)
        api = served.api
        posts = []
        for name in (*_names_on(MOVING, 1, "copied"), *_names_on(STAYING, 1, "kept")):
            _, headers = await api.user(name)
            posts += [await api.post(headers, f"{name} {n}") for n in range(3)]
        databases = [Database(settings.db.for_shard(url)) for url in urls[:2]]
        stack.push_async_callback(databases[1].dispose)
        stack.push_async_callback(databases[0].dispose)
        await move.synchronise(databases[0], databases[1], MOVING, [STAYING])

        async def listed() -> tuple[list[int], list[str]]:
            native = await api.all_pages("/posts/", limit=4)
            articles = []
            for offset in (0, 4):
                response = await served.client.get(
                    "/api/articles", params={"limit": 4, "offset": offset}
                )
                articles += [article["slug"] for article in response.json()["articles"]]
            return [item["id"] for page in native for item in page], articles

        newest_first = sorted(posts, reverse=True)
        before_the_copy_is_used = await listed()
        assert before_the_copy_is_used[0] == newest_first
        assert len(set(before_the_copy_is_used[1])) == len(posts)
        await set_entry(databases[0], MOVING, 1, READY)
        await _wait_for(lambda: served.shards.map.databases[MOVING] == 1)
        assert await listed() == before_the_copy_is_used


async def test_two_instances_switch_and_read_the_moved_user_from_the_new_database(
    urls: list[str],
) -> None:
    # Checks far apart: only the Redis announcement can make them switch this soon.
    settings = _settings(urls[:2], 30.0, redis_url=REDIS_URL, cache=CacheSettings(enabled=False))
    async with AsyncExitStack() as stack:
        first = await _serve(settings, stack)
        second = await _serve(settings, stack)
        (name,) = _names_on(MOVING, 1, "twice")
        user_id, headers = await first.api.user(name)
        post_id = await first.api.post(headers, "Moved")
        touches = Touches(second.shards)
        touches.reset()
        assert (await second.client.get(f"/posts/{post_id}")).status_code == 200
        assert touches.touched() == [0]

        await move_shard(settings.db, MOVING, 1, redis_url=REDIS_URL, say=lambda _: None)

        await _wait_for(lambda: first.shards.map.databases[MOVING] == 1, within=3)
        await _wait_for(lambda: second.shards.map.databases[MOVING] == 1, within=3)
        touches.reset()
        read = await second.client.get(f"/posts/{post_id}")
        assert read.status_code == 200, read.text
        assert read.json()["author"]["id"] == user_id
        assert (await second.client.get(f"/users/{user_id}")).status_code == 200
        assert touches.touched() == [1]


async def test_a_write_to_a_frozen_shard_waits_for_the_unfreeze_or_gets_503(
    urls: list[str],
) -> None:
    settings = _settings(urls[:2], 0.05)
    directory = Database(settings.db.for_shard(urls[0]))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(directory.dispose)
        served = await _serve(settings, stack)
        (frozen_name,) = _names_on(MOVING, 1, "frozen")
        (free_name,) = _names_on(STAYING, 1, "free")
        _, headers = await served.api.user(frozen_name)
        _, free_headers = await served.api.user(free_name)

        await set_entry(directory, MOVING, 0, FROZEN)
        await _wait_for(lambda: served.shards.map.is_frozen(MOVING))
        waiting = asyncio.create_task(
            served.client.post("/posts/", json={"title": "Held", "content": "x"}, headers=headers)
        )
        # Another shard's writes go on meanwhile.
        other = await served.client.post(
            "/posts/", json={"title": "Free", "content": "x"}, headers=free_headers
        )
        assert other.status_code == 201
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await set_entry(directory, MOVING, 0, READY)
        assert (await waiting).status_code == 201

        served.shards.freeze_wait = 0.3
        await set_entry(directory, MOVING, 0, FROZEN)
        await _wait_for(lambda: served.shards.map.is_frozen(MOVING))
        refused = await served.client.post(
            "/posts/", json={"title": "Refused", "content": "x"}, headers=headers
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        await set_entry(directory, MOVING, 0, READY)


async def test_rebalance_onto_a_third_database_keeps_every_page(urls: list[str]) -> None:
    two = _settings(urls[:2], 0.1)
    async with AsyncExitStack() as stack:
        served = await _serve(two, stack)
        authors = [await served.api.user(f"writer{n}") for n in range(8)]
        for n in range(16):
            _, headers = authors[n % len(authors)]
            await served.api.post(headers, f"Page post {n}", tags=["even" if n % 2 else "odd"])
        before = await served.api.all_pages("/posts/", limit=3)

    await init_shards(DatabaseSettings(url=urls[0], shards=urls))
    said: list[str] = []
    three = _settings(urls, 0.1)
    moves = await rebalance(three.db, say=said.append)

    directory = Database(three.db.for_shard(urls[0]))
    try:
        shard_map = await load_shard_map(directory, 3)
    finally:
        await directory.dispose()
    shares = sorted(len(shard_map.logical_shards_of(index)) for index in range(3))
    assert shares == [10, 11, 11]
    assert moves == 10
    assert sum(line.startswith("moving logical shard") for line in said) == moves
    assert said[-1] == "balanced: logical shards per database [11, 11, 10]"
    assert sum(shares) == LOGICAL_SHARDS
    async with AsyncExitStack() as stack:
        served = await _serve(three, stack)
        assert await served.api.all_pages("/posts/", limit=3) == before


async def test_a_move_that_fails_before_the_switch_leaves_the_source_serving(
    urls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(urls[:2], 0.1)
    async with AsyncExitStack() as stack:
        served = await _serve(settings, stack)
        (name,) = _names_on(MOVING, 1, "stays")
        _, headers = await served.api.user(name)
        await served.api.post(headers, "Stays")
    # An instance that never acknowledges the freeze, seen just now.
    await execute(
        urls[0],
        "INSERT INTO shard_map_instances VALUES ('stuck', now(), "
        "CAST(array_fill(0, ARRAY[32]) AS bigint[]))",
    )
    monkeypatch.setattr(move, "ACKNOWLEDGE_WITHIN", 0.3)
    said: list[str] = []
    with pytest.raises(TimeoutError):
        await move_shard(settings.db, MOVING, 1, say=said.append)
    assert said[-1] == "failed: logical shard 4 stays on database 0, its partial copy deleted"
    directory = Database(settings.db.for_shard(urls[0]))
    try:
        shard_map = await load_shard_map(directory, 2)
    finally:
        await directory.dispose()
    assert (shard_map.databases[MOVING], shard_map.states[MOVING]) == (0, READY)
    assert set((await _rows_of(urls[1], MOVING)).values()) == {0}
    assert (await _rows_of(urls[0], MOVING))["posts"] == 1

    # Run again once the instance is gone: it moves.
    await execute(urls[0], "DELETE FROM shard_map_instances")
    await move_shard(settings.db, MOVING, 1, say=said.append)
    assert (await _rows_of(urls[1], MOVING))["posts"] == 1
    assert set((await _rows_of(urls[0], MOVING)).values()) == {0}


async def test_the_commands_move_report_each_step_and_a_second_run_finds_it_done(
    urls: list[str], tmp_path: Path
) -> None:
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(urls[:2])}
    await execute(urls[0], "UPDATE shard_map SET state = 'frozen' WHERE logical = 7")
    status = fastpost("shards", "status", env=env, cwd=tmp_path)
    assert "logical shard 7: move in progress (frozen)" in status.stdout, status.stdout
    await execute(urls[0], "UPDATE shard_map SET state = 'ready' WHERE logical = 7")

    moved = fastpost("shards", "move", "4", "--to", "1", env=env, cwd=tmp_path)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    steps = [line.split(":")[0] for line in moved.stdout.splitlines()]
    assert steps == [
        "moving logical shard 4",
        "copy",
        "freeze",
        "catch up",
        "verify",
        "switch",
        "delete",
    ], moved.stdout
    again = fastpost("shards", "move", "4", "--to", "1", env=env, cwd=tmp_path)
    assert again.stdout.strip() == "logical shard 4 is on database 1"
    wrong = fastpost("shards", "move", "4", "--to", "5", env=env, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "no database 5" in wrong.stdout
