"""Replicas that fail or fall behind leave the rotation and come back; readers never see an
error for it; /health/ready and /metrics show each replica (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from fastapi import FastAPI

from fastpost.cluster import postgres
from fastpost.db import Database
from fastpost.replicas import Replica
from tests.helpers import PgCluster, wait_until
from tests.replicas.conftest import AppMaker, db_url, wait_for_replay

NOTHING_LISTENS = "postgresql+asyncpg://postgres@127.0.0.1:1/fastpost"


def _replicas(app: FastAPI) -> list[Replica]:
    db: Database = app.state.db
    assert db.replicas is not None
    return db.replicas.replicas


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Poll `condition` until it holds; return how long it took."""
    started = time.monotonic()
    await wait_until(condition, within)
    return time.monotonic() - started


async def test_a_replica_killed_under_load_costs_readers_nothing_and_rejoins_when_restarted(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    node = replicated.replicas[0]
    async with make_app([node], replica_check_interval_seconds=0.2) as (app, client):
        (replica,) = _replicas(app)
        statuses: list[int] = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                response = await client.get("/posts/search", params={"q": "load"})
                statuses.append(response.status_code)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        try:
            await asyncio.sleep(1.0)
            served_before_kill = len(statuses)
            await asyncio.to_thread(postgres.kill, node)
            await _until(lambda: not replica.in_rotation, within=5)
            await asyncio.sleep(1.0)  # reads go on, on the primary
            await asyncio.to_thread(postgres.start, node)
            back_after = await _until(lambda: replica.in_rotation, within=10)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*readers)
            if node.pid() is None:
                await asyncio.to_thread(postgres.start, node)
    assert served_before_kill > 0
    assert len(statuses) > served_before_kill
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert back_after < 5


async def test_a_replica_further_behind_than_the_maximum_lag_leaves_rotation_until_it_catches_up(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    node = replicated.replicas[0]
    replica_conn = await asyncpg.connect(node.url())
    primary_conn = await asyncpg.connect(replicated.primary.url("fastpost"))
    try:
        async with make_app(
            [node], replica_max_lag_seconds=1.0, replica_check_interval_seconds=0.2
        ) as (app, client):
            (replica,) = _replicas(app)
            await replica_conn.execute("SELECT pg_wal_replay_pause()")
            try:
                # Something to replay: the replica falls behind from here on.
                await primary_conn.execute("CREATE TEMP TABLE t AS SELECT 1 AS x")
                await primary_conn.execute("ANALYZE")
                await _until(lambda: not replica.in_rotation, within=10)
                ready = await client.get("/health/ready")
                search = await client.get("/posts/search", params={"q": "lagging"})
            finally:
                await replica_conn.execute("SELECT pg_wal_replay_resume()")
            await _until(lambda: replica.in_rotation, within=10)
            after = (await client.get("/health/ready")).json()["replicas"][0]
    finally:
        await replica_conn.close()
        await primary_conn.close()
    assert ready.status_code == 200  # the primary takes the reads
    assert search.status_code == 200
    (shown,) = ready.json()["replicas"]
    assert shown["in_rotation"] is False
    assert shown["lag_seconds"] > 1.0
    assert "lag" in shown["reason"]
    assert after["in_rotation"] is True
    assert after["reason"] is None
    assert after["lag_seconds"] <= 1.0


async def test_ready_stays_ok_with_a_replica_down_and_shows_each_replica(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    node = replicated.replicas[0]
    await wait_for_replay(replicated)
    async with make_app([node, NOTHING_LISTENS], in_rotation=False) as (app, client):
        await _until(lambda: _replicas(app)[0].in_rotation, within=10)
        ready = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
        search = await client.get("/posts/search", params={"q": "anything"})
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    up, down = body["replicas"]
    assert up["replica"] == f"127.0.0.1:{node.port}"
    assert up["in_rotation"] is True
    assert up["lag_seconds"] is not None
    assert up["lag_seconds"] < 5
    assert up["replay_lsn"]
    assert down == {
        "replica": "127.0.0.1:1",
        "in_rotation": False,
        "lag_seconds": None,
        "replay_lsn": None,
        "reason": down["reason"],
    }
    assert down["reason"].startswith("check failed")
    assert search.status_code == 200
    assert f'db_replica_in_rotation{{replica="127.0.0.1:{node.port}"}} 1.0' in metrics
    assert 'db_replica_in_rotation{replica="127.0.0.1:1"} 0.0' in metrics
    assert 'db_replica_lag_seconds{replica="127.0.0.1:1"} +Inf' in metrics
    assert "password" not in metrics


async def test_ready_lists_no_replicas_when_none_are_configured(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    async with make_app([]) as (_, client):
        ready = await client.get("/health/ready")
    assert ready.json() == {
        "status": "ok",
        "database": "up",
        "reason": None,
        "replicas": [],
        "shards": [],
    }


async def test_replica_urls_with_a_password_are_labelled_by_host_and_port_only(
    make_app: AppMaker, replicated: PgCluster
) -> None:
    node = replicated.replicas[0]
    # Trust authentication ignores the password: the URL still carries one.
    url = db_url(node).replace("postgres@", "postgres:s3cret@")
    async with make_app([url]) as (_, client):
        ready = (await client.get("/health/ready")).text
        metrics = (await client.get("/metrics")).text
    assert f"127.0.0.1:{node.port}" in ready
    assert "s3cret" not in ready
    assert "s3cret" not in metrics
