"""fastpost.cluster.postgres: a real primary and streaming replica on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from fastpost.cluster import postgres
from tests.helpers import PgCluster, postgres_cluster, postgres_missing_reason, wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster(apply_delays=(None,)) as made:
        yield made


async def _fetchval(node: postgres.PgNode, sql: str) -> object:
    conn = await asyncpg.connect(node.url())
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_nodes_live_in_their_own_folders_under_the_state_directory(cluster: PgCluster) -> None:
    (replica,) = cluster.replicas
    for node in (cluster.primary, replica):
        assert node.data_dir.is_relative_to(cluster.state_dir.resolve())
        assert node.log_file.is_relative_to(cluster.state_dir.resolve())
        assert node.url("fastpost") == f"postgresql://postgres@127.0.0.1:{node.port}/fastpost"
        assert node.pid() is not None
        assert postgres.is_up(node)
        # The socket too: nothing is written to /var/run/postgresql.
        assert (node.data_dir.parent / f".s.PGSQL.{node.port}").exists()
    assert cluster.primary.role == "primary"
    assert replica.role == "replica"


async def test_a_row_written_on_the_primary_is_read_on_the_replica(cluster: PgCluster) -> None:
    (replica,) = cluster.replicas
    primary = await asyncpg.connect(cluster.primary.url())
    try:
        await primary.execute("CREATE TABLE IF NOT EXISTS notes (body text)")
        await primary.execute("INSERT INTO notes VALUES ('streamed')")
    finally:
        await primary.close()

    async def replicated() -> bool:
        conn = await asyncpg.connect(replica.url())
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relname = 'notes'"
            ) and await conn.fetchval("SELECT count(*) FROM notes WHERE body = 'streamed'")
            return bool(found)
        finally:
            await conn.close()

    for _ in range(100):  # up to 5 s
        if await replicated():
            break
        await asyncio.sleep(0.05)
    assert await replicated()
    assert await _fetchval(replica, "SELECT pg_is_in_recovery()") is True
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await _fetchval(replica, "INSERT INTO notes VALUES ('refused') RETURNING 1")


def test_replay_lag_is_zero_when_caught_up_and_none_for_a_primary(cluster: PgCluster) -> None:
    (replica,) = cluster.replicas
    assert postgres.replay_lag_seconds(cluster.primary) is None
    lag = postgres.replay_lag_seconds(replica)
    assert lag is not None
    assert lag < 5


async def test_kill_stop_and_start_a_replica(cluster: PgCluster) -> None:
    (replica,) = cluster.replicas
    postgres.kill(replica)
    assert replica.pid() is None
    assert not postgres.is_up(replica)
    assert postgres.replay_lag_seconds(replica) is None
    postgres.start(replica)
    assert postgres.is_up(replica)
    await wait_until(lambda: postgres.replay_lag_seconds(replica) == 0.0, within=15)
    postgres.stop(replica)
    assert replica.pid() is None
    assert not postgres.is_up(replica)
    postgres.stop(replica)  # nothing running: nothing to do
    postgres.start(replica)
    postgres.start(replica)  # already running: nothing to do
    assert postgres.is_up(replica)


def test_init_again_keeps_the_data(cluster: PgCluster) -> None:
    primary = cluster.primary
    postgres.stop(primary)
    again = postgres.init_primary(cluster.state_dir, port=primary.port)
    assert again == primary
    postgres.start(again)
    count = postgres._query(primary.port, "SELECT count(*) FROM notes")
    assert count is not None
    assert int(count) >= 1


def test_a_machine_without_postgresql_is_told_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(postgres, "DEBIAN_BINARIES", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(postgres.PostgresMissing, match="apt-get install postgresql"):
        postgres.pg_bindir()
