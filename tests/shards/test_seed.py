"""`fastpost seed` in sharded mode fills every database, each row where sharded mode reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastpost.ids import shard_of
from tests.helpers import environment, fastpost
from tests.shards.helpers import Api, execute


async def test_seed_fills_every_database_and_the_api_reads_it(
    api: Api, emptied: dict[str, Any], tmp_path: Path
) -> None:
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(emptied["shards"])}
    small = ("--users", "30", "--posts", "120", "--follows", "60", "--likes", "200")
    seeded = fastpost("seed", "--if-empty", *small, env=env, cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    again = fastpost("seed", "--if-empty", *small, env=env, cwd=tmp_path)
    assert "not seeding" in again.stdout

    urls = emptied["shards"]
    mapping = {logical: logical % 2 for logical in range(32)}  # round-robin, 2 databases
    users = [await execute(url, "SELECT id FROM users") for url in urls]
    posts = [await execute(url, "SELECT id, author_id FROM posts") for url in urls]
    assert sum(len(found) for found in users) == 30
    assert sum(len(found) for found in posts) == 120
    for index in (0, 1):
        assert users[index], "every database gets users"
        assert all(mapping[shard_of(user_id)] == index for (user_id,) in users[index])
        assert all(
            mapping[shard_of(post_id)] == index and shard_of(post_id) == shard_of(author)
            for post_id, author in posts[index]
        )
        # likes_count agrees with the likes rows, which live with their post.
        mismatched = await execute(
            urls[index],
            "SELECT p.id FROM posts p LEFT JOIN likes l ON l.post_id = p.id "
            "GROUP BY p.id HAVING p.likes_count <> count(l.post_id)",
        )
        assert mismatched == []

    login = await api.client.post(
        "/auth/login", json={"username": "testuser", "password": "testpass"}
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    newest = await api.all_pages("/posts/", limit=50)
    published = 0
    for url in urls:
        ((count,),) = await execute(url, "SELECT count(*) FROM posts WHERE status = 'published'")
        published += count
    assert sum(len(page) for page in newest) == published
    assert (await api.client.get("/feed", headers=headers)).status_code == 200
    tags = (await api.client.get("/tags")).json()
    assert tags
