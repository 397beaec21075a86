"""`fastpost cluster up --shards 2`, end to end: the directory on the primary, the other
database on a second PostgreSQL server that `up` starts, one instance behind nginx in
sharded mode; then that server stopped, then `cluster down`.

The tests of this module run in order: the last two stop what the first ones use.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from fastpost.cli import app
from fastpost.cluster.lifecycle import Cluster
from fastpost.cluster.processes import command_line
from fastpost.cluster.state import ClusterState
from fastpost.cluster.topology import instance_environment, plan, shard_databases
from fastpost.shards.shard_map import ShardMap, logical_shard_for_username
from tests import helpers
from tests.cluster.traffic import skip_without_binaries

skip_without_binaries()

PASSWORD = "correct horse battery"
# Longer than a connection refused takes to become a 503, far shorter than a hang.
REQUEST_TIMEOUT = 10.0


def fastpost(*args: str, cwd: Path, extra: dict[str, str] | None = None) -> Any:
    # No rate limits in the instance (it inherits FASTPOST_* variables): one client here
    # registers several users in a second.
    env = {
        **os.environ,
        "COLUMNS": "200",
        "FASTPOST_RATE_LIMITS__ENABLED": "false",
        **(extra or {}),
    }
    return helpers.fastpost(*args, env=env, cwd=cwd, timeout=300)


@dataclass
class Up:
    workdir: Path
    state_dir: Path
    base_url: str
    # FASTPOST_DB__SHARDS as the instance was given it: SQLAlchemy URLs, directory first.
    shard_urls: list[str]

    def database(self, index: int) -> str:
        """The asyncpg DSN of shard database `index`."""
        return self.shard_urls[index].replace("postgresql+asyncpg://", "postgresql://")

    def holds(self, index: int, table: str, row_id: int) -> bool:
        async def look() -> bool:
            conn = await asyncpg.connect(self.database(index))
            try:
                # `table` is this module's own ("users", "posts").
                return bool(await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", row_id))
            finally:
                await conn.close()

        return asyncio.run(look())


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    # Under /tmp, not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, who
    # must reach its folder.
    workdir = Path(tempfile.mkdtemp(prefix="fastpost-cluster-shards-"))
    workdir.chmod(0o755)
    try:
        result = fastpost(
            "cluster", "up", "--shards", "2", "--instances", "1", "--posts", "60",
            "--free-ports", "--port", "0", "--state-dir", "state",
            cwd=workdir,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        state = ClusterState.load(workdir / "state")
        assert state is not None
        (nginx,) = [p for p in state.parts if p.kind == "nginx"]
        shard_urls = json.loads(state.settings["instance_env"]["FASTPOST_DB__SHARDS"])
        yield Up(workdir, workdir / "state", f"http://127.0.0.1:{nginx.port}", shard_urls)
    finally:
        if ClusterState.load(workdir / "state") is not None:
            Cluster(workdir / "state").down()
        shutil.rmtree(workdir, ignore_errors=True)


def _register(client: httpx.Client, name: str) -> httpx.Response:
    return client.post(
        "/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
    )


def _name_on(index: int, prefix: str) -> str:
    """A username whose logical shard `shards init`'s round-robin map puts on database
    `index` of two."""
    placed = ShardMap.round_robin(2)
    n = 0
    while placed.databases[logical_shard_for_username(f"{prefix}{n}")] != index:
        n += 1
    return f"{prefix}{n}"


@pytest.fixture(scope="module")
def people(up: Up) -> dict[int, tuple[int, str, int]]:
    """One registered user on each database: index -> (user id, token, id of their post)."""
    found: dict[int, tuple[int, str, int]] = {}
    with httpx.Client(base_url=up.base_url, timeout=REQUEST_TIMEOUT) as client:
        n = 0
        while len(found) < 2:
            n += 1
            assert n < 60, "60 names, all on one database"
            name = f"sharded{n}"
            registered = _register(client, name)
            assert registered.status_code == 201, registered.text
            user_id = registered.json()["id"]
            (index,) = [i for i in (0, 1) if up.holds(i, "users", user_id)]
            if index in found:
                continue
            login = client.post("/auth/login", json={"username": name, "password": PASSWORD})
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            created = client.post(
                "/posts/",
                json={"title": f"From database {index}", "content": "Sharded."},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            found[index] = (user_id, token, created.json()["id"])
    return found


def test_up_places_the_directory_on_the_primary_and_the_other_database_on_a_second_server(
    up: Up,
) -> None:
    state = ClusterState.load(up.state_dir)
    assert state is not None
    ports = {p.name: p.port for p in state.parts}

    placed = [(make_url(url).port, make_url(url).database) for url in up.shard_urls]

    assert placed == [(ports["primary"], "fastpost"), (ports["shard-server"], "fastpost_shard_1")]
    assert not any(p.kind == "replica" for p in state.parts)


def test_status_shows_the_second_server_up(up: Up) -> None:
    result = fastpost("cluster", "status", "--json", "--state-dir", "state", cwd=up.workdir)

    assert result.returncode == 0, result.stderr
    parts = {part["name"]: part for part in json.loads(result.stdout)}
    server = parts["shard-server"]
    assert server["kind"] == "shard_server"
    assert server["up"] is True
    assert isinstance(server["pid"], int)
    assert server["shard_databases"] == ["fastpost_shard_1"]
    assert parts["primary"]["shard_databases"] == ["fastpost"]


def test_seed_filled_both_databases(up: Up) -> None:
    async def count(index: int) -> tuple[int, int]:
        conn = await asyncpg.connect(up.database(index))
        try:
            users = await conn.fetchval("SELECT count(*) FROM users")
            posts = await conn.fetchval("SELECT count(*) FROM posts")
            return int(users), int(posts)
        finally:
            await conn.close()

    counts = [asyncio.run(count(index)) for index in (0, 1)]

    assert all(users > 0 and posts > 0 for users, posts in counts), counts
    assert sum(posts for _, posts in counts) >= 60


def test_a_new_post_is_read_back_through_nginx_from_its_authors_database(
    up: Up, people: dict[int, tuple[int, str, int]]
) -> None:
    with httpx.Client(base_url=up.base_url, timeout=REQUEST_TIMEOUT) as client:
        for index, (_, token, post_id) in people.items():
            read = client.get(f"/posts/{post_id}", headers={"Authorization": f"Bearer {token}"})

            assert read.status_code == 200, read.text
            assert read.json()["title"] == f"From database {index}"
            assert up.holds(index, "posts", post_id)
            assert not up.holds(1 - index, "posts", post_id)


def test_the_newest_page_spans_both_databases(
    up: Up, people: dict[int, tuple[int, str, int]]
) -> None:
    with httpx.Client(base_url=up.base_url, timeout=REQUEST_TIMEOUT) as client:
        page = client.get("/posts/", params={"limit": 20})

    assert page.status_code == 200, page.text
    ids = [post["id"] for post in page.json()["items"]]
    # The two posts just written are the newest of all.
    assert {post_id for _, _, post_id in people.values()} <= set(ids[:2])
    homes = [[i for i in (0, 1) if up.holds(i, "posts", post_id)] for post_id in ids]
    assert all(len(home) == 1 for home in homes), homes
    assert {home[0] for home in homes} == {0, 1}


def test_shards_status_lists_both_servers(up: Up) -> None:
    result = fastpost(
        "shards", "status", cwd=up.workdir,
        extra={"FASTPOST_DB__SHARDS": json.dumps(up.shard_urls)},
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    for index, url in enumerate(up.shard_urls):
        assert f"database {index}" in text
        assert f":{make_url(url).port}/{make_url(url).database}" in text


def test_with_the_second_server_stopped_only_requests_that_need_it_fail_fast_with_503(
    up: Up, people: dict[int, tuple[int, str, int]]
) -> None:
    cluster = Cluster(up.state_dir)
    (server,) = [p for p in cluster.state.parts if p.kind == "shard_server"]
    cluster.stop_part(server)
    alive_user, alive_token, alive_post = people[0]
    down_user, _, down_post = people[1]

    with httpx.Client(base_url=up.base_url, timeout=REQUEST_TIMEOUT) as client:
        for path in (f"/users/{alive_user}", f"/posts/{alive_post}"):
            assert client.get(path).status_code == 200, path
        written = client.post(
            "/posts/",
            json={"title": "Still writing", "content": "The directory is up."},
            headers={"Authorization": f"Bearer {alive_token}"},
        )
        assert written.status_code == 201, written.text
        # A newcomer whose name the map puts on the directory's database registers and logs in.
        newcomer = _name_on(0, "newcomer")
        assert _register(client, newcomer).status_code == 201
        login = client.post("/auth/login", json={"username": newcomer, "password": PASSWORD})
        assert login.status_code == 200, login.text
        # Reads no earlier test made (a cached page would still be served, rightly), and
        # writes. Each answer arrives within the client's timeout (a hang would raise here).
        needing_it = [
            client.get(f"/users/{down_user}/followers"),
            client.get(f"/users/{down_user}/posts", params={"limit": 7}),
            client.get("/posts/", params={"limit": 13}),
            client.post(
                f"/posts/{down_post}/like", headers={"Authorization": f"Bearer {alive_token}"}
            ),
            _register(client, _name_on(1, "stranded")),
        ]
    for response in needing_it:
        assert response.status_code == 503, (response.url, response.text)
        assert "retry-after" in response.headers, response.url
        assert response.elapsed.total_seconds() < REQUEST_TIMEOUT, response.url


def test_down_stops_the_second_server_with_everything_else(up: Up) -> None:
    before = [part.as_json() for part in Cluster(up.state_dir).status()]

    result = fastpost("cluster", "down", "--state-dir", "state", cwd=up.workdir)

    assert result.returncode == 0, result.stderr
    assert "shard-server" in result.stdout
    for part in before:
        if part.get("pid") is not None:
            assert command_line(part["pid"]) is None, part
    after = Cluster(up.state_dir).status()
    assert [(part.up, part.pid) for part in after] == [(False, None)] * len(before)


def test_shards_are_spread_over_both_servers_directory_first() -> None:
    placed = shard_databases(4)

    assert placed[0] == ("primary", "fastpost")
    assert [server for server, _ in placed] == [
        "primary",
        "shard-server",
        "primary",
        "shard-server",
    ]
    assert len({database for _, database in placed}) == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shards", "2", "--replicas", "1"], "does not take read replicas"),
        (["--shards", "1"], "2 to 32 databases"),
        (["--shards", "33"], "2 to 32 databases"),
    ],
)
def test_up_refuses_shards_it_cannot_run_before_starting_anything(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["cluster", "up", "--state-dir", str(tmp_path / "state"), *arguments]
    )

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "state").exists()


def test_plan_puts_the_second_server_after_the_primary() -> None:
    parts = plan(replicas=0, shards=2, postgres_port=6000)

    servers = [(p.kind, p.name, p.port) for p in parts if p.kind in ("primary", "shard_server")]
    assert servers == [("primary", "primary", 6000), ("shard_server", "shard-server", 6001)]


def test_every_instance_is_told_the_databases_of_both_servers_in_order() -> None:
    parts = plan(replicas=0, shards=4, postgres_port=6000)

    env = instance_environment(parts, shards=4)

    assert json.loads(env["FASTPOST_DB__SHARDS"]) == [
        "postgresql+asyncpg://postgres@127.0.0.1:6000/fastpost",
        "postgresql+asyncpg://postgres@127.0.0.1:6001/fastpost_shard_1",
        "postgresql+asyncpg://postgres@127.0.0.1:6000/fastpost_shard_2",
        "postgresql+asyncpg://postgres@127.0.0.1:6001/fastpost_shard_3",
    ]
    assert "FASTPOST_DB__REPLICA_URLS" not in env
