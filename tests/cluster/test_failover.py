"""nginx in front of real fastpost instances, as `fastpost cluster up` starts them: the
course's upstream (weights 3, 3, 2 and a backup), instances killed and stopped under load.

One topology for the module (a PostgreSQL primary of its own, Redis, four instances, nginx);
each test leaves every instance running as it found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fastpost.cluster import instances, nginx
from fastpost.cluster.lifecycle import Cluster
from fastpost.cluster.processes import is_running
from fastpost.cluster.state import Started
from fastpost.cluster.topology import max_body_bytes, plan
from tests.cluster.traffic import (
    Load,
    access_log,
    for_seconds,
    on_free_ports,
    served_by,
    skip_without_binaries,
    steady_load,
)

skip_without_binaries()

WEIGHTS = [3, 3, 2]


@dataclass
class Running:
    cluster: Cluster
    base_url: str
    access_log: Path

    def instance(self, name: str) -> Started:
        (started,) = [p for p in self.cluster.state.parts if p.name == name]
        return started

    @property
    def active(self) -> list[Started]:
        return [p for p in self.cluster.state.parts if p.kind == "instance" and not p.backup]

    @property
    def backup(self) -> Started:
        (backup,) = [p for p in self.cluster.state.parts if p.kind == "instance" and p.backup]
        return backup

    def kill(self, name: str, sig: signal.Signals) -> None:
        pid = self.instance(name).pid
        assert pid is not None
        assert is_running(pid, instances.MARKER)
        os.killpg(pid, sig)

    def wait_gone(self, name: str, timeout: float = 30) -> None:
        pid = self.instance(name).pid
        assert pid is not None
        deadline = time.monotonic() + timeout
        while is_running(pid, instances.MARKER):
            # Our own child: reap it, or it lingers as a zombie.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            assert time.monotonic() < deadline, f"{name} did not exit"
            time.sleep(0.05)

    def restart(self, name: str) -> None:
        self.wait_gone(name)
        self.cluster.wait_ready(self.cluster.restart_instance(name))


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, who
    # must reach its folder (pytest's are private to us).
    state_dir = Path(tempfile.mkdtemp(prefix="fastpost-failover-"))
    parts = on_free_ports(plan(instances=4, replicas=0, weights=WEIGHTS, backup=True))
    cluster = Cluster(state_dir)
    # No rate limits in the instances, started and restarted from this process's
    # environment: the load below writes and reads feeds faster than any person.
    no_limits = pytest.MonkeyPatch()
    no_limits.setenv("FASTPOST_RATE_LIMITS__ENABLED", "false")
    try:
        cluster.up(parts, posts=50)
        (nginx,) = [p for p in parts if p.kind == "nginx"]
        yield Running(
            cluster, f"http://127.0.0.1:{nginx.port}", state_dir / "nginx/logs/access.json"
        )
    finally:
        cluster.down()
        no_limits.undo()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def token(running: Running) -> str:
    response = httpx.post(
        f"{running.base_url}/auth/login", json={"username": "testuser", "password": "testpass"}
    )
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def _instance_log_has(started: Started, text: str, timeout: float = 10) -> bool:
    # fastpost writes JSON access lines a batch at a time (see fastpost.observability.served).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in Path(started.log_file).read_text():
            return True
        time.sleep(0.2)
    return False


def test_one_request_id_is_in_nginx_log_and_in_the_instance_log(running: Running) -> None:
    given = httpx.get(f"{running.base_url}/posts/?limit=1", headers={"X-Request-ID": "trace-42"})
    made = httpx.get(f"{running.base_url}/posts/?limit=1")

    assert given.headers["x-request-id"] == "trace-42"
    # No id from the client: nginx's $request_id, 32 hex digits, is the one fastpost uses.
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    assert int(made_id, 16) >= 0
    lines = {line["request_id"]: line for line in access_log(running.access_log)}
    for request_id in ("trace-42", made_id):
        port = served_by(lines[request_id])
        (instance,) = [p for p in running.cluster.state.parts if p.port == port]
        assert _instance_log_has(instance, f'"request_id":"{request_id}"')
        assert lines[request_id]["upstream_response_time"] != ""


def test_nginx_refuses_a_body_larger_than_fastpost_accepts(running: Running) -> None:
    response = httpx.post(
        f"{running.base_url}/posts/",
        content=b"x" * (max_body_bytes() + 1),
        headers={"Content-Type": "application/json", "X-Request-ID": "too-large-1"},
    )

    assert response.status_code == 413
    (line,) = access_log(running.access_log, "too-large-")
    assert line["upstream_addr"] == ""  # refused by nginx, no instance bothered


async def test_requests_spread_over_the_instances_by_weight_and_the_backup_waits(
    running: Running,
) -> None:
    load = Load(phase="weights")
    sent = 0

    def enough() -> bool:
        nonlocal sent
        sent += 1
        return sent > 800

    await steady_load(
        running.base_url,
        {"health": lambda http, rid: http.get("/health", headers={"X-Request-ID": rid})},
        load=load,
        until=enough,
        # Two requests at a time: instances are seldom busy, so least_conn often finds them
        # equally idle and picks among them by weight. (Under a load that saturates the cores
        # the instances share, connection counts per weight decide, and all of them slow
        # down together: weights then say less.)
        concurrency=2,
        pause=0,
    )

    assert load.failures == []
    served = Counter(served_by(line) for line in access_log(running.access_log, "weights."))
    total = sum(served.values())
    assert total == load.sent["weights"]
    for instance in running.active:
        share = served[instance.port] / total
        expected = instance.weight / sum(WEIGHTS)
        assert abs(share / expected - 1) <= 0.15, (instance.name, share, expected, served)
    assert served[running.backup.port] == 0


async def test_an_instance_killed_under_load_costs_no_request_and_rejoins_when_restarted(
    running: Running,
) -> None:
    victim = running.active[0]
    load = Load(phase="before")
    pages = {
        "list": lambda http, rid: http.get("/posts/?limit=5", headers={"X-Request-ID": rid}),
        "health": lambda http, rid: http.get("/health", headers={"X-Request-ID": rid}),
        "tags": lambda http, rid: http.get("/tags/", headers={"X-Request-ID": rid}),
    }
    started = time.monotonic()
    stop = False
    traffic = asyncio.create_task(
        steady_load(running.base_url, pages, load=load, until=lambda: stop)
    )

    await asyncio.sleep(5)
    running.kill(victim.name, signal.SIGKILL)
    load.phase = "killed"
    await asyncio.sleep(5)
    await asyncio.to_thread(running.restart, victim.name)
    load.phase = "restarted"
    # Until 20 s of load in all, and long enough after the restart for nginx to try the
    # instance again (fail_timeout=5s in ops/nginx).
    await asyncio.sleep(max(8.0, 20 - (time.monotonic() - started)))
    stop = True
    await traffic

    assert load.failures == []
    assert all(load.sent[phase] > 100 for phase in ("before", "killed", "restarted")), load.sent
    lines = access_log(running.access_log)
    by_phase = {
        phase: Counter(served_by(line) for line in lines if line["request_id"].startswith(phase))
        for phase in ("before.", "killed.", "restarted.")
    }
    assert by_phase["before."][victim.port] > 0
    assert by_phase["restarted."][victim.port] > 0
    # Two instances were left: the backup was never needed.
    assert by_phase["killed."][running.backup.port] == 0


async def test_an_instance_stopped_under_load_finishes_its_requests_and_fails_none(
    running: Running, token: str
) -> None:
    victim = running.active[1]
    load = Load(phase="before")
    auth = {"Authorization": f"Bearer {token}"}
    created = Counter[int]()

    async def publish(http: httpx.AsyncClient, rid: str) -> httpx.Response:
        response = await http.post(
            "/posts/",
            json={"title": f"Written during {rid}", "content": "Under load."},
            headers={**auth, "X-Request-ID": rid},
        )
        created[response.status_code] += 1
        return response

    requests = {
        "list": lambda http, rid: http.get("/posts/?limit=5", headers={"X-Request-ID": rid}),
        "publish": publish,
        "feed": lambda http, rid: http.get("/feed", headers={**auth, "X-Request-ID": rid}),
    }
    stop = False
    traffic = asyncio.create_task(
        steady_load(running.base_url, requests, load=load, until=lambda: stop)
    )

    await asyncio.sleep(3)
    running.kill(victim.name, signal.SIGTERM)
    load.phase = "stopping"
    await asyncio.to_thread(running.wait_gone, victim.name)
    load.phase = "stopped"
    await asyncio.sleep(3)
    stop = True
    await traffic
    await asyncio.to_thread(running.restart, victim.name)

    assert load.failures == []
    assert set(created) == {201}
    assert created[201] > 30
    served = Counter(served_by(line) for line in access_log(running.access_log, "before."))
    assert served[victim.port] > 0


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads nginx's workers from /proc")
async def test_nginx_reloads_its_configuration_under_load_without_failing_a_request(
    running: Running,
) -> None:
    (proxy,) = [p for p in running.cluster.state.parts if p.kind == "nginx"]
    assert proxy.pid is not None
    load = Load(phase="reload")
    stop = False
    traffic = asyncio.create_task(
        steady_load(
            running.base_url,
            {"list": lambda http, rid: http.get("/posts/?limit=5", headers={"X-Request-ID": rid})},
            load=load,
            until=lambda: stop,
            # An old worker closes its idle keep-alive connections as it leaves, and a client
            # that writes into one just then has to retry (as HTTP/1.1 lets it for idempotent
            # requests; httpx does not). Requests on new connections must not fail at all.
            keepalive=False,
        )
    )

    await asyncio.sleep(1)
    workers = _children(proxy.pid)
    nginx.reload(proxy.pid)
    await asyncio.sleep(2)
    stop = True
    await traffic

    assert load.failures == []
    assert load.sent["reload"] > 50
    # New workers took over; the old ones finished their requests and left.
    assert workers
    assert _children(proxy.pid).isdisjoint(workers)


def _children(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children


async def test_the_backup_serves_only_when_every_other_instance_is_down(
    running: Running,
) -> None:
    for instance in running.active:
        running.kill(instance.name, signal.SIGKILL)
    load = Load(phase="alone")

    await steady_load(
        running.base_url,
        {"list": lambda http, rid: http.get("/posts/?limit=5", headers={"X-Request-ID": rid})},
        load=load,
        until=for_seconds(3),
    )
    for instance in running.active:
        running.wait_gone(instance.name)
    await asyncio.gather(
        *(asyncio.to_thread(running.restart, instance.name) for instance in running.active)
    )

    assert load.failures == []
    served = Counter(served_by(line) for line in access_log(running.access_log, "alone."))
    assert set(served) == {running.backup.port}
    assert sum(served.values()) == load.sent["alone"] > 20
