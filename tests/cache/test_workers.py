"""The cache across real worker processes sharing one Redis and one database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from fastpost.bench.servers import free_port
from tests.cache.conftest import PrivateRedis
from tests.cache.counting_app import COUNTER
from tests.helpers import RedisClusterNodes, environment, migrate_and_seed
from tests.servers import stop_group, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
# Other workers drop an entry on the pub/sub message, at the latest when their tier-1 TTL
# (FASTPOST_CACHE__LOCAL_TTL_SECONDS, 5 s by default) runs out.
STALENESS_BOUND_SECONDS = 5.0


class Server:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *args, "--port", str(self.port), "--no-access-log"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_until_ready(
                f"{self.url}/health",
                self.process,
                # Not its stderr: reading a live process's pipe would block.
                lambda: f"exit code {self.process.poll()}",
            )
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        stop_group(self.process)
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture
def seeded_env(tmp_path: Path, private_redis: PrivateRedis) -> dict[str, str]:
    env = {
        **environment(tmp_path),
        "FASTPOST_REDIS_URL": private_redis.url,
        "FASTPOST_AUTH__SECRET_KEY": "k" * 48,
        "PYTHONPATH": str(ROOT),
    }
    migrate_and_seed(
        env, tmp_path, "--users", "10", "--posts", "20", "--follows", "5", "--likes", "5"
    )
    return env


def _login(base: str) -> dict[str, str]:
    token = httpx.post(
        f"{base}/auth/login", json={"username": "testuser", "password": "testpass"}
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_an_edit_through_one_process_is_seen_through_another(
    seeded_env: dict[str, str],
) -> None:
    a = Server(seeded_env, "fastpost.app:create_app", "--factory")
    b = Server(seeded_env, "fastpost.app:create_app", "--factory")
    try:
        headers = _login(a.url)
        created = httpx.post(
            f"{a.url}/posts/", headers=headers, json={"title": "Version 1", "content": "c"}
        ).json()
        path = f"/posts/{created['id']}"
        assert httpx.get(b.url + path).json()["title"] == "Version 1"  # now cached in B
        assert httpx.get(b.url + path).json()["title"] == "Version 1"
        edited = httpx.patch(a.url + path, headers=headers, json={"title": "Version 2"})
        assert edited.status_code == 200
        started = time.monotonic()
        while httpx.get(b.url + path).json()["title"] != "Version 2":
            assert time.monotonic() - started < STALENESS_BOUND_SECONDS
            time.sleep(0.02)
    finally:
        a.stop()
        b.stop()


def test_a_burst_on_a_cold_post_loads_it_once_across_two_workers(
    seeded_env: dict[str, str], private_redis: PrivateRedis
) -> None:
    server = Server(
        seeded_env, "tests.cache.counting_app:create_app", "--factory", "--workers", "2"
    )
    try:
        counter = redis.Redis.from_url(private_redis.url)
        post_id = httpx.get(f"{server.url}/posts/?limit=1").json()["items"][0]["id"]
        counter.delete(COUNTER)

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
                responses = await asyncio.gather(
                    *(client.get(f"/posts/{post_id}") for _ in range(100))
                )
                return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [200] * 100
        assert int(counter.get(COUNTER) or 0) <= 1
    finally:
        server.stop()


def test_an_edit_through_one_process_reaches_two_others_through_a_redis_cluster(
    tmp_path: Path, redis_cluster_nodes: RedisClusterNodes
) -> None:
    redis_cluster_nodes.flush()
    env = {
        **environment(tmp_path),
        "FASTPOST_REDIS_URL": redis_cluster_nodes.url,
        "FASTPOST_AUTH__SECRET_KEY": "k" * 48,
        "PYTHONPATH": str(ROOT),
        # Far beyond the test: only the invalidation message, through the cluster's sharded
        # pub/sub, can make the readers drop the copy they hold.
        "FASTPOST_CACHE__LOCAL_TTL_SECONDS": "600",
    }
    migrate_and_seed(env, tmp_path, "--users", "5", "--posts", "5")
    servers = [Server(env, "fastpost.app:create_app", "--factory") for _ in range(3)]
    writer, readers = servers[0], servers[1:]
    try:
        headers = _login(writer.url)
        created = httpx.post(
            f"{writer.url}/posts/", headers=headers, json={"title": "Version 1", "content": "c"}
        ).json()
        path = f"/posts/{created['id']}"
        for reader in readers:
            for _ in range(2):  # the second from the reader's tier 1
                assert httpx.get(reader.url + path).json()["title"] == "Version 1"
        edited = httpx.patch(writer.url + path, headers=headers, json={"title": "Version 2"})
        assert edited.status_code == 200
        started = time.monotonic()
        for reader in readers:
            while httpx.get(reader.url + path).json()["title"] != "Version 2":
                assert time.monotonic() - started < STALENESS_BOUND_SECONDS
                time.sleep(0.02)
    finally:
        for server in servers:
            server.stop()
