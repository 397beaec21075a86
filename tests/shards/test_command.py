"""`fastpost shards init | status` on the session's two databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers import environment, fastpost
from tests.shards.helpers import Api, execute


async def test_init_again_keeps_the_map_and_status_shows_each_databases_share(
    api: Api, emptied: dict[str, Any], tmp_path: Path
) -> None:
    await api.user("counted")
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(emptied["shards"])}
    init = fastpost("shards", "init", env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert "database 0: 16 logical shards" in init.stdout
    assert "database 1: 16 logical shards" in init.stdout
    status = fastpost("shards", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "database 0" in status.stdout
    assert "database 1" in status.stdout
    assert "users" in status.stdout
    assert "postgres@" in status.stdout  # the URL, its password hidden


def test_shards_commands_need_the_databases_named(tmp_path: Path) -> None:
    result = fastpost("shards", "status", env=environment(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "FASTPOST_DB__SHARDS is empty" in result.stdout


async def test_serve_counts_the_pools_of_every_database_on_a_server(
    emptied: dict[str, Any], tmp_path: Path
) -> None:
    # As many workers as one database's pools fit on the server, but not twice over: both
    # databases of these tests are on the same server.
    (limit,) = (await execute(emptied["shards"][0], "SHOW max_connections"))[0]
    per_worker = 10 + 5  # pool_size + write_pool_size, by default
    workers = (int(limit) - 5) // per_worker
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(emptied["shards"])}
    result = fastpost("serve", "--workers", str(workers), "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "connections" in result.stdout


async def test_admin_commands_reach_the_users_own_database(
    api: Api, emptied: dict[str, Any], tmp_path: Path
) -> None:
    names = [f"admined{n}" for n in range(6)]
    for name in names:
        await api.user(name)
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(emptied["shards"])}
    for name in names:
        granted = fastpost("admin", "grant", name, env=env, cwd=tmp_path)
        assert granted.returncode == 0, granted.stdout + granted.stderr
    for url in emptied["shards"]:
        rows = await execute(url, "SELECT username FROM users WHERE NOT is_admin")
        assert rows == []
    closed = fastpost("admin", "deactivate", names[-1].upper(), env=env, cwd=tmp_path)
    assert closed.returncode == 0, closed.stdout + closed.stderr
    login = await api.client.post(
        "/auth/login", json={"username": names[-1], "password": "correct horse battery"}
    )
    assert login.status_code == 401
    missing = fastpost("admin", "grant", "nobody", env=env, cwd=tmp_path)
    assert missing.returncode == 1
