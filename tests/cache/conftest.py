"""Redis for the cache tests: the machine's server (database 15, emptied per test) and the
session's 3-master Redis Cluster (`redis_url` gives each in turn), or a private server on a
port of its own for tests that stop and restart it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from fastpost.bench.servers import free_port
from tests.helpers import RedisClusterNodes, local_redis_url

REDIS_URL = os.environ.get("FASTPOST_TEST_REDIS_URL") or local_redis_url(15)


def _redis_available(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on one Redis server and again on a Redis Cluster."""
    if request.param == "redis-cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("redis_cluster_nodes")
        nodes.flush()
        return nodes.url
    if not _redis_available(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    return REDIS_URL


class PrivateRedis:
    """A redis-server process of the test's own, which it may stop and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _redis_available(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
