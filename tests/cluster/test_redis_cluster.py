"""`fastpost cluster up --redis-cluster 3`: the instances share a Redis Cluster of three
masters, started and stopped with the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from fastpost.cluster import redis as cluster_redis
from fastpost.cluster.lifecycle import Cluster
from fastpost.cluster.processes import command_line
from fastpost.cluster.state import ClusterState
from fastpost.cluster.topology import instance_environment, plan
from fastpost.settings import Settings
from tests import helpers
from tests.cluster.traffic import skip_without_binaries

skip_without_binaries()
if helpers.redis_cluster_missing_reason() is not None:
    pytest.skip(str(helpers.redis_cluster_missing_reason()), allow_module_level=True)


def fastpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return helpers.fastpost(*args, env={**os.environ, "COLUMNS": "200"}, cwd=cwd, timeout=240)


def test_a_redis_cluster_plan_has_its_masters_on_consecutive_ports() -> None:
    parts = plan(redis_masters=3)

    assert [(p.name, p.port) for p in parts if p.kind == "redis"] == [
        ("redis-1", 6380),
        ("redis-2", 6381),
        ("redis-3", 6382),
    ]
    env = instance_environment(parts, hosts={"redis-2": "cache-2"})
    assert env["FASTPOST_REDIS_URL"] == (
        "redis+cluster://127.0.0.1:6380,cache-2:6381,127.0.0.1:6382"
    )
    assert Settings(redis_url=env["FASTPOST_REDIS_URL"]).redis_url == env["FASTPOST_REDIS_URL"]
    with pytest.raises(ValueError, match="at least 3 masters"):
        plan(redis_masters=2)


@dataclass
class Up:
    workdir: Path
    state: ClusterState


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, who
    # must reach its folder.
    workdir = Path(tempfile.mkdtemp(prefix="fastpost-redis-cluster-"))
    workdir.chmod(0o755)
    try:
        result = fastpost(
            "cluster", "up", "--instances", "2", "--replicas", "0", "--redis-cluster", "3",
            "--posts", "20", "--free-ports", "--port", "0", "--state-dir", "state",
            cwd=workdir,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        state = ClusterState.load(workdir / "state")
        assert state is not None
        yield Up(workdir, state)
    finally:
        if ClusterState.load(workdir / "state") is not None:
            Cluster(workdir / "state").down()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_instances_are_told_a_cluster_of_every_master_that_runs(up: Up) -> None:
    nodes = [p for p in up.state.parts if p.kind == "redis"]
    assert [p.name for p in nodes] == ["redis-1", "redis-2", "redis-3"]
    for node in nodes:
        assert cluster_redis.cluster_is_ok(node.port)
    assert up.state.settings["instance_env"]["FASTPOST_REDIS_URL"] == (
        "redis+cluster://" + ",".join(f"127.0.0.1:{p.port}" for p in nodes)
    )


def test_an_edit_through_one_instance_is_read_through_the_other(up: Up) -> None:
    first, second = (f"http://127.0.0.1:{p.port}" for p in up.state.parts if p.kind == "instance")
    with httpx.Client(timeout=30) as client:
        login = client.post(
            f"{first}/auth/login", json={"username": "testuser", "password": "testpass"}
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = client.post(
            f"{first}/posts/", headers=headers, json={"title": "Version 1", "content": "c"}
        )
        assert created.status_code == 201, created.text
        path = f"/posts/{created.json()['id']}"
        for _ in range(2):
            assert client.get(second + path).json()["title"] == "Version 1"
        edited = client.patch(first + path, headers=headers, json={"title": "Version 2"})
        assert edited.status_code == 200, edited.text
        started = time.monotonic()
        while client.get(second + path).json()["title"] != "Version 2":
            # At the latest when the second instance's tier-1 copy expires (5 s).
            assert time.monotonic() - started < 5
            time.sleep(0.05)
    # The entries went to the cluster, spread by their hash tags.
    stored = 0
    for node in (p for p in up.state.parts if p.kind == "redis"):
        with redis.Redis(port=node.port) as client:
            stored += client.dbsize()
    assert stored > 0


def test_down_stops_every_redis_node(up: Up) -> None:
    nodes = [p for p in up.state.parts if p.kind == "redis"]
    result = fastpost("cluster", "down", "--state-dir", "state", cwd=up.workdir)

    assert result.returncode == 0, result.stderr
    for node in nodes:
        assert node.pid is not None
        assert command_line(node.pid) is None
        assert not cluster_redis.is_up(node.port)
