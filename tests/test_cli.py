"""The `fastpost` command, end to end: migrate, seed and serve in real processes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fastpost.cluster.processes import free_port
from tests.helpers import environment, fastpost, migrate_and_seed, scrape, serve_fastpost
from tests.servers import stop_group, wait_until_ready


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path)


def test_help_explains_every_command(env: dict[str, str], tmp_path: Path) -> None:
    result = fastpost("--help", env=env, cwd=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "seed", "db"):
        assert command in result.stdout
    for sub in (["serve", "--help"], ["seed", "--help"], ["db", "--help"]):
        assert fastpost(*sub, env=env, cwd=tmp_path).returncode == 0


def test_production_without_a_key_refuses_to_start_with_a_clear_message(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = fastpost("serve", env={**env, "FASTPOST_ENV": "production"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "FASTPOST_AUTH__SECRET_KEY is not set" in result.stdout + result.stderr


def test_seed_if_empty_loads_once(env: dict[str, str], tmp_path: Path) -> None:
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    small = ["--users", "20", "--posts", "50", "--follows", "30", "--likes", "60"]
    first = fastpost("seed", "--if-empty", *small, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "rows/s" in first.stdout
    second = fastpost("seed", "--if-empty", *small, env=env, cwd=tmp_path)
    assert second.returncode == 0
    assert "already has data" in second.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `fastpost serve --workers 2` on SQLite with a little demo data, shared by the
    tests of this module (starting processes is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("served")
    env = environment(tmp_path)
    migrate_and_seed(
        env, tmp_path, "--users", "20", "--posts", "50", "--follows", "30", "--likes", "60"
    )
    with serve_fastpost("--workers", "2", env=env, cwd=tmp_path) as serving:
        yield serving.base


def test_served_api_logs_in_the_demo_user_and_lists_posts(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/docs").status_code == 200
        login = client.post("/auth/login", json={"username": "testuser", "password": "testpass"})
        assert login.status_code == 200
        token = login.json()["access_token"]
        me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["username"] == "testuser"
        for path in ("/posts", "/posts/"):
            page = client.get(path)
            assert page.status_code == 200  # no redirect for either form
            assert len(page.json()["items"]) == 20


def test_concurrent_writes_across_two_sqlite_worker_processes_never_fail(server: str) -> None:
    async def hammer() -> list[int]:
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            login = await client.post(
                "/auth/login", json={"username": "testuser", "password": "testpass"}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            responses = await asyncio.gather(
                *(
                    client.post("/posts/", headers=headers, json={"title": f"t{i}", "content": "c"})
                    for i in range(80)
                )
            )
            return [r.status_code for r in responses]

    statuses = asyncio.run(hammer())
    assert statuses == [201] * 80


@pytest.mark.skipif(
    importlib.util.find_spec("granian") is None,
    reason="granian is not installed: pip install -e '.[granian]'",
)
def test_granian_serves_two_workers_that_share_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    env = {
        **environment(tmp_path),
        "FASTPOST_OBSERVABILITY__LOG_FORMAT": "json",
        "FASTPOST_OBSERVABILITY__METRICS_FLUSH_SECONDS": "0.2",
        "FASTPOST_OBSERVABILITY__SAMPLE_INTERVAL_SECONDS": "0.2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    migrate_and_seed(
        env, tmp_path, "--users", "5", "--posts", "10", "--follows", "3", "--likes", "3"
    )
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastpost.cli", "serve", "--server", "granian",
             "--workers", "2", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/health/ready", process, log_path.read_text)
        with httpx.Client(base_url=base) as client:
            login = client.post(
                "/auth/login", json={"username": "testuser", "password": "testpass"}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = client.post("/posts/", headers=headers, json={"title": "t", "content": "c"})
            assert created.status_code == 201
            assert client.get(f"/posts/{created.json()['id']}").status_code == 200
        # A new connection per request, so that both workers take some.
        for _ in range(30):
            assert httpx.get(f"{base}/health", headers={"Connection": "close"}).status_code == 200

        # Whichever worker answers the scrape, it reports both and every request they served.
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(base)
            pids = {
                dict(labels)["pid"]
                for name, labels in samples
                if name == "fastpost_worker_cpu_seconds_total"
            }
            health = sum(
                v
                for (name, labels), v in samples.items()
                if name == "http_requests_total" and dict(labels).get("route") == "/health"
            )
            if (len(pids), health) == (2, 30) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (len(pids), health) == (2, 30)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # no worker outlived it
    finally:
        if process.poll() is None:
            stop_group(process)
    # Our access lines, one per request, flushed by both workers before they stopped.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    served = [line for line in lines if line.get("route") == "/health"]
    assert len(served) == 30
