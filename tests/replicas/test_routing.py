"""Reads on replicas, writes on the primary, and read-your-writes, on a real primary with
streaming replicas (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import httpx

from fastpost.cluster.postgres import PgNode
from fastpost.db import Database
from fastpost.observability.statements import record_statements
from fastpost.redis_client import connect, parse_redis_url
from fastpost.replicas import LSN_COOKIE, PRIMARY_LSN, parse_lsn, user_key
from tests.conftest import PASSWORD
from tests.helpers import PgCluster, RedisClusterNodes, wait_until
from tests.replicas.conftest import DATABASE, AppMaker


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _register(client: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    """A new user through the API: (id, Authorization header)."""
    name = _unique("u")
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    created = await client.post("/auth/register", json=body)
    assert created.status_code == 201, created.text
    login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return created.json()["id"], {"Authorization": f"Bearer {login.json()['access_token']}"}


async def _commits(node: PgNode) -> int:
    """Transactions committed in the app's database on this server (pg_stat_database)."""
    conn = await asyncpg.connect(node.url())
    try:
        found: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", DATABASE
        )
        return found
    finally:
        await conn.close()


async def _commits_after_flush(node: PgNode, at_least: int) -> int:
    """The count once the closed connections' statistics have reached the server (a backend
    reports them as it exits), waiting for `at_least` if it is not there yet."""
    async with asyncio.timeout(15):
        while await _commits(node) < at_least:  # noqa: ASYNC110 (a server's counter)
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # any slower backend's report
    return await _commits(node)


async def test_anonymous_reads_are_served_by_the_replicas_in_turn(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    reads = 40
    primary, (fresh, delayed) = replicated.primary, replicated.replicas
    before = {node.name: await _commits(node) for node in (primary, fresh, delayed)}
    async with make_app([fresh, delayed]) as (app, client):
        db: Database = app.state.db
        assert db.replicas is not None
        checks_before = db.replicas.checks
        for _ in range(reads):
            # Search is never cached: each of these is one statement.
            response = await client.get("/posts/search", params={"q": "anything"})
            assert response.status_code == 200
        checks = db.replicas.checks - checks_before + 1
    # Leaving the app closed every pool: the servers now count what those connections did.
    on_fresh = (
        await _commits_after_flush(fresh, before[fresh.name] + reads // 2) - before[fresh.name]
    )
    on_delayed = (
        await _commits_after_flush(delayed, before[delayed.name] + reads // 2)
        - before[delayed.name]
    )
    on_primary = await _commits(primary) - before[primary.name]
    assert on_fresh >= reads // 2
    assert on_delayed >= reads // 2
    # The primary saw the monitor's position checks (one statement each), no read; the
    # slack is for autovacuum, whose transactions count too.
    assert on_primary <= checks + 5, (on_primary, checks)


async def test_a_write_hands_the_client_its_position_in_one_statement_more_than_without_replicas(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    post = {"title": "Counting", "content": "statements per write"}
    statements: dict[str, list[str]] = {}
    for name, replicas in (("alone", []), ("replicated", replicated.replicas[:1])):
        async with make_app(replicas) as (_, client):
            _, auth = await _register(client)
            with record_statements() as log:
                created = await client.post("/posts", json=post, headers=auth)
            assert created.status_code == 201
            statements[name] = log
            if replicas:
                assert LSN_COOKIE in created.cookies
            else:
                assert LSN_COOKIE not in created.cookies
    assert PRIMARY_LSN not in statements["alone"]
    assert statements["replicated"] == [*statements["alone"], PRIMARY_LSN]


async def test_without_its_position_a_client_reads_the_delayed_replica_and_misses_its_post(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    # What read-your-writes guards against, shown: the delayed replica really is behind.
    delayed = replicated.replicas[1]
    async with make_app([delayed], redis=False) as (_, client):
        _, auth = await _register(client)
        word = _unique("w")
        created = await client.post("/posts", json={"title": word, "content": "x"}, headers=auth)
        assert created.status_code == 201
        client.cookies.clear()
        found = await client.get("/posts/search", params={"q": word}, headers=auth)
    assert found.status_code == 200
    assert found.json() == []


async def _create_and_read_back(
    client: httpx.AsyncClient, user_id: int, auth: dict[str, str], *, keep_cookies: bool
) -> None:
    word = _unique("w")
    created = await client.post("/posts", json={"title": word, "content": "x"}, headers=auth)
    assert created.status_code == 201, created.text
    post_id = created.json()["id"]
    if not keep_cookies:
        client.cookies.clear()
    mine = await client.get(f"/users/{user_id}/posts", headers=auth)
    assert post_id in [p["id"] for p in mine.json()["items"]], "its own posts, with its token"
    found = await client.get("/posts/search", params={"q": word}, headers=auth)
    assert [p["id"] for p in found.json()] == [post_id], "uncached search, with its token"
    if keep_cookies:
        anonymous = await client.get(f"/users/{user_id}/posts")
        assert post_id in [p["id"] for p in anonymous.json()["items"]], "anonymous, cookie"
        searched = await client.get("/posts/search", params={"q": word})
        assert [p["id"] for p in searched.json()] == [post_id], "anonymous search, cookie"


async def test_a_client_that_keeps_cookies_always_reads_its_own_writes(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    async with make_app([replicated.replicas[1]], redis=False) as (_, client):
        user_id, auth = await _register(client)
        for _ in range(100):
            await _create_and_read_back(client, user_id, auth, keep_cookies=True)


async def test_a_token_client_that_drops_cookies_reads_its_own_writes_through_redis(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    async with make_app([replicated.replicas[1]]) as (_, client):
        user_id, auth = await _register(client)
        for _ in range(100):
            await _create_and_read_back(client, user_id, auth, keep_cookies=False)


async def test_a_token_client_reads_its_own_writes_through_a_redis_cluster(
    make_app: AppMaker, replicated: PgCluster, redis_cluster_nodes: RedisClusterNodes
) -> None:
    redis_cluster_nodes.flush()
    async with make_app([replicated.replicas[1]], redis=redis_cluster_nodes.url) as (_, client):
        user_id, auth = await _register(client)
        for _ in range(20):
            await _create_and_read_back(client, user_id, auth, keep_cookies=False)
    # The position went through the cluster (a Redis failure would read the primary: safe,
    # but not this test's point).
    cluster = connect(parse_redis_url(redis_cluster_nodes.url))
    try:
        assert await cluster.get(user_key(user_id)) is not None
    finally:
        await cluster.aclose()


async def test_a_client_reads_a_replica_again_once_it_has_replayed_the_write(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    delayed = replicated.replicas[1]
    async with make_app([delayed], redis=False) as (app, client):
        _, auth = await _register(client)
        word = _unique("w")
        await client.post("/posts", json={"title": word, "content": "x"}, headers=auth)
        written = parse_lsn(client.cookies[LSN_COOKIE])
        assert written is not None
        db: Database = app.state.db
        assert db.replicas is not None
        replica = db.replicas.replicas[0]
        assert replica.replay_lsn < written  # 2 s of delay: not yet
        before = await _commits(delayed)
        await wait_until(lambda: replica.replay_lsn >= written, within=10)
        for _ in range(5):
            assert (await client.get("/posts/search", params={"q": word})).json()
    assert await _commits_after_flush(delayed, before + 5) >= before + 5


async def test_a_login_right_after_registering_reads_the_primary(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    # A login is a POST: its credentials are read on the primary, cookie or not.
    async with make_app([replicated.replicas[1]], redis=False) as (_, client):
        for _ in range(5):
            client.cookies.clear()
            await _register(client)


async def test_cache_fills_read_the_primary(make_app: AppMaker, replicated: PgCluster) -> None:
    # An anonymous client without any position reads the cached first page of an author:
    # filled after the write's invalidation, from the primary, it shows the new post even
    # though the only replica has not replayed it.
    async with make_app([replicated.replicas[1]], redis=False) as (_, client):
        user_id, auth = await _register(client)
        for _ in range(5):
            created = await client.post("/posts", json={"title": "t", "content": "x"}, headers=auth)
            client.cookies.clear()
            page = await client.get(f"/users/{user_id}/posts")
            assert created.json()["id"] in [p["id"] for p in page.json()["items"]]


async def test_reads_inside_a_write_request_go_to_the_primary(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    # PATCH reads the post it changes, then answers with it: all on the primary, where the
    # post created a moment ago already is (the delayed replica has not replayed it).
    async with make_app([replicated.replicas[1]], redis=False) as (_, client):
        _, auth = await _register(client)
        for _ in range(5):
            created = await client.post("/posts", json={"title": "t", "content": "x"}, headers=auth)
            client.cookies.clear()
            post_id = created.json()["id"]
            changed = await client.patch(f"/posts/{post_id}", json={"title": "u"}, headers=auth)
            assert changed.status_code == 200, changed.text
            assert changed.json()["title"] == "u"


async def test_a_client_that_just_wrote_skips_a_worker_memory_that_missed_the_invalidation(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    fresh = replicated.replicas[0]
    async with make_app([fresh]) as (_, writer), make_app([fresh]) as (other_worker, reader):
        user_id, auth = await _register(writer)
        first = await writer.post("/posts/", json={"title": "one", "content": "x"}, headers=auth)
        assert first.status_code == 201
        listing = f"/users/{user_id}/posts"
        warm = await reader.get(listing)
        assert [p["title"] for p in warm.json()["items"]] == ["one"]
        # The other worker stops hearing invalidations, as when a pub/sub message is lost.
        listener = other_worker.state.cache._listener
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        second = await writer.post("/posts/", json={"title": "two", "content": "x"}, headers=auth)
        assert second.status_code == 201

        stale = await reader.get(listing)
        reader.cookies.set(LSN_COOKIE, writer.cookies[LSN_COOKIE])
        own = await reader.get(listing, headers=auth)

    # The control: a client with no position is served the worker's memory, still stale.
    assert [p["title"] for p in stale.json()["items"]] == ["one"]
    assert [p["title"] for p in own.json()["items"]] == ["two", "one"]
