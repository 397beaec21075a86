"""Read-your-writes across worker processes: a real `fastpost serve --workers 2` reading
from the replica that replays 2 s late, each request on a new connection (so any worker may
answer it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, TEST_SECRET
from tests.helpers import FAST_ENV, PgCluster, serve_fastpost
from tests.replicas.conftest import REDIS_URL, db_url


@pytest.fixture
def served(replicated: PgCluster, tmp_path: Path) -> Iterator[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
        "FASTPOST_DATA_DIR": str(tmp_path / "data"),
        "FASTPOST_DB__URL": db_url(replicated.primary),
        "FASTPOST_DB__REPLICA_URLS": db_url(replicated.replicas[1]),
        "FASTPOST_DB__POOL_SIZE": "4",
        "FASTPOST_DB__WRITE_POOL_SIZE": "2",
        "FASTPOST_REDIS_URL": REDIS_URL,
        "FASTPOST_AUTH__SECRET_KEY": TEST_SECRET,
        **FAST_ENV,
        "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
    }
    with serve_fastpost("--workers", "2", env=env, cwd=tmp_path) as serving:
        yield serving.base


async def test_every_worker_serves_a_client_its_own_writes(served: str) -> None:
    # No keep-alive: each request opens a connection that either worker may accept.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=served, limits=limits, timeout=10) as client:
        name = f"u{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        assert (await client.post("/auth/register", json=body)).status_code == 201
        login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for n in range(60):
            word = f"w{uuid.uuid4().hex[:10]}"
            post = {"title": word, "content": "x"}
            created = await client.post("/posts", json=post, headers=auth)
            assert created.status_code == 201, created.text
            post_id = created.json()["id"]
            if n % 2:  # a token client that drops cookies: its position is in Redis
                client.cookies.clear()
                found = await client.get("/posts/search", params={"q": word}, headers=auth)
            else:  # a cookie, no token
                found = await client.get("/posts/search", params={"q": word})
            assert found.status_code == 200
            assert [p["id"] for p in found.json()] == [post_id], n
