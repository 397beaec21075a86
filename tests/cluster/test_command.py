"""`fastpost cluster up | status | down` from the command line, end to end: real nginx,
PostgreSQL primary and streaming replica, Redis and fastpost instances."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fastpost.cli import app
from fastpost.cluster.lifecycle import Cluster
from fastpost.cluster.postgres import PgNode
from fastpost.cluster.processes import command_line
from fastpost.cluster.state import ClusterState
from tests import helpers
from tests.cluster.traffic import skip_without_binaries

skip_without_binaries()


def fastpost(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # No rate limits in the instances (which inherit FASTPOST_* variables): one client here
    # writes a hundred posts in a few seconds.
    env = {**os.environ, "COLUMNS": "200", "FASTPOST_RATE_LIMITS__ENABLED": "false"}
    return helpers.fastpost(*args, env=env, cwd=cwd, timeout=timeout)


@dataclass
class Up:
    workdir: Path
    state_dir: Path
    base_url: str

    def status(self) -> list[dict[str, Any]]:
        result = fastpost("cluster", "status", "--json", "--state-dir", "state", cwd=self.workdir)
        assert result.returncode == 0, result.stderr
        parts: list[dict[str, Any]] = json.loads(result.stdout)
        return parts


def _empty_dir(prefix: str) -> Path:
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, who
    # must reach its folder.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _stop_anything_left(state_dir: Path) -> None:
    if ClusterState.load(state_dir) is not None:
        Cluster(state_dir).down()


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """`cluster up --instances 3 --replicas 1`, run from an empty folder, state in ./state."""
    workdir = _empty_dir("fastpost-cluster-cli-")
    try:
        result = fastpost(
            "cluster", "up", "--instances", "3", "--replicas", "1", "--posts", "50",
            "--replica-apply-delay", "2s", "--free-ports", "--port", "0", "--state-dir", "state",
            cwd=workdir,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        state = ClusterState.load(workdir / "state")
        assert state is not None
        (nginx,) = [p for p in state.parts if p.kind == "nginx"]
        yield Up(workdir, workdir / "state", f"http://127.0.0.1:{nginx.port}")
    finally:
        _stop_anything_left(workdir / "state")
        shutil.rmtree(workdir, ignore_errors=True)


def test_up_prints_what_runs_where(up: Up) -> None:
    table = fastpost("cluster", "status", "--state-dir", "state", cwd=up.workdir).stdout

    for name in ("primary", "replica-1", "redis", "instance-1", "instance-3", "nginx"):
        assert name in table
    assert "backup" in table


def test_status_json_shows_every_part_up(up: Up) -> None:
    parts = up.status()

    kinds = sorted(part["kind"] for part in parts)
    assert kinds == ["instance"] * 3 + ["nginx", "primary", "redis", "replica"]
    for part in parts:
        assert part["up"] is True, part
        assert isinstance(part["pid"], int), part
        assert isinstance(part["port"], int), part
    (replica,) = [part for part in parts if part["kind"] == "replica"]
    assert replica["lag_seconds"] >= 0
    for instance in (part for part in parts if part["kind"] == "instance"):
        # Counted by the instance's /metrics: at least the readiness probes of `up`.
        assert instance["requests"] >= 1


def test_a_user_always_reads_their_own_new_post_through_nginx(up: Up) -> None:
    # The replica replays 2 s late; a browser keeps cookies, and so does this client.
    with httpx.Client(base_url=up.base_url, timeout=30) as browser:
        login = browser.post("/auth/login", json={"username": "testuser", "password": "testpass"})
        assert login.status_code == 200, login.text
        browser.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        me = browser.get("/users/me").json()["id"]
        for n in range(100):
            created = browser.post("/posts/", json={"title": f"Mine {n}", "content": "Now."})
            assert created.status_code == 201, created.text
            listed = browser.get(f"/users/{me}/posts", params={"limit": 5})
            assert listed.status_code == 200
            assert created.json()["id"] in [post["id"] for post in listed.json()["items"]], n


def test_down_stops_every_process_and_leaves_nothing_outside_the_state_dir(up: Up) -> None:
    # Read in-process (the command itself is tested above): a second of imports less.
    before = [part.as_json() for part in Cluster(up.state_dir).status()]
    pg_ports = [part["port"] for part in before if part["kind"] in ("primary", "replica")]

    result = fastpost("cluster", "down", "--state-dir", "state", cwd=up.workdir)

    assert result.returncode == 0, result.stderr
    for part in before:
        assert command_line(part["pid"]) is None, part
    after = Cluster(up.state_dir).status()
    assert [(part.up, part.pid) for part in after] == [(False, None)] * len(before)
    assert [child.name for child in up.workdir.iterdir()] == ["state"]
    for port in pg_ports:
        for socket_dir in ("/tmp", "/var/run/postgresql"):
            assert not Path(socket_dir, f".s.PGSQL.{port}").exists()


def test_down_after_up_was_killed_halfway_stops_what_had_started() -> None:
    workdir = _empty_dir("fastpost-cluster-crash-")
    state_dir = workdir / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "fastpost.cli", "cluster", "up", "--instances", "2",
         "--replicas", "1", "--posts", "0", "--free-ports", "--port", "0",
         "--state-dir", "state"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Killed once Redis has started: the primary and the replica run, no instance yet.
        deadline = time.monotonic() + 120
        while True:
            state = ClusterState.load(state_dir)
            if state is not None and any(p.kind == "redis" for p in state.parts):
                break
            assert up.poll() is None, "up ended before Redis started"
            assert time.monotonic() < deadline, "up never started Redis"
            time.sleep(0.02)
        up.send_signal(signal.SIGKILL)
        up.wait()
        state = ClusterState.load(state_dir)
        assert state is not None
        started = {p.name: p for p in state.parts}
        assert {"primary", "replica-1", "redis"} <= set(started)
        nodes = [
            PgNode(p.name, "primary" if p.kind == "primary" else "replica", p.port,
                   Path(p.directory), Path(p.log_file))
            for p in state.parts if p.kind in ("primary", "replica")
        ]  # fmt: skip
        assert all(node.pid() is not None for node in nodes)
        redis_pid = started["redis"].pid
        assert redis_pid is not None
        assert command_line(redis_pid) is not None

        result = fastpost("cluster", "down", "--state-dir", "state", cwd=workdir)

        assert result.returncode == 0, result.stderr
        assert all(node.pid() is None for node in nodes)
        assert command_line(redis_pid) is None
        assert not any(part["up"] for part in json.loads(
            fastpost("cluster", "status", "--json", "--state-dir", "state", cwd=workdir).stdout
        ))  # fmt: skip
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        _stop_anything_left(state_dir)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--weights", "3,x"], "whole numbers separated by commas"),
        (["--instances", "3", "--weights", "3,3,2"], "3 weights for 2 active instance"),
    ],
)
def test_up_refuses_a_topology_that_cannot_work_before_starting_anything(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["cluster", "up", "--state-dir", str(tmp_path / "state"), *arguments]
    )

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "state").exists()


def test_up_will_not_start_in_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    result = CliRunner().invoke(app, ["cluster", "up", "--state-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "holds no cluster state" in " ".join(result.output.split())
    assert [child.name for child in tmp_path.iterdir()] == ["notes.txt"]
