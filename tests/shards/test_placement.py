"""Where rows live: a user, their posts and what belongs to each post on the user's
database; a follow on both users' databases."""

from __future__ import annotations

from typing import Any

from fastpost.settings import Settings
from fastpost.shards.router import Shards
from fastpost.shards.setup import shard_status
from tests.shards.helpers import Api, execute


async def _ids(url: str, sql: str) -> set[Any]:
    return {tuple(row) if len(row) > 1 else row[0] for row in await execute(url, sql)}


async def test_a_users_rows_all_live_on_their_shards_database(
    api: Api, shards: Shards, sharded_settings: Settings
) -> None:
    urls = sharded_settings.db.shards
    users = [await api.user(f"placed{n}") for n in range(8)]
    assert {shards.index_of(user_id) for user_id, _ in users} == {0, 1}
    posts: dict[int, int] = {}
    for user_id, headers in users:
        posts[await api.post(headers, f"By {user_id}", tags=["placed"])] = user_id
    liker_id, liker = users[0]
    for post_id in posts:
        assert (await api.client.post(f"/posts/{post_id}/like", headers=liker)).status_code == 200
    for followee_id, _ in users[1:]:
        await api.follow(liker, followee_id)
    comments: dict[int, int] = {}
    for post_id in posts:
        commented = await api.client.post(
            f"/posts/{post_id}/comments", json={"body": "Placed"}, headers=liker
        )
        assert commented.status_code == 201, commented.text
        comments[commented.json()["id"]] = post_id

    stored_users = [await _ids(url, "SELECT id FROM users") for url in urls]
    stored_posts = [await _ids(url, "SELECT id, author_id FROM posts") for url in urls]
    stored_likes = [await _ids(url, "SELECT post_id FROM likes") for url in urls]
    stored_tags = [await _ids(url, "SELECT post_id FROM post_tags") for url in urls]
    stored_comments = [await _ids(url, "SELECT id FROM comments") for url in urls]
    stored_follows = [
        await _ids(url, "SELECT follower_id, followee_id FROM follows") for url in urls
    ]
    for user_id, _ in users:
        home = shards.index_of(user_id)
        assert [user_id in found for found in stored_users] == [n == home for n in (0, 1)]
    for post_id, author_id in posts.items():
        home = shards.index_of(author_id)
        assert post_id >> 48 == author_id >> 48
        for n in (0, 1):
            assert ((post_id, author_id) in stored_posts[n]) == (n == home)
            assert (post_id in stored_likes[n]) == (n == home)
            assert (post_id in stored_tags[n]) == (n == home)
    for comment_id, post_id in comments.items():
        assert comment_id >> 48 == post_id >> 48
        home = shards.index_of(post_id)
        assert [comment_id in found for found in stored_comments] == [n == home for n in (0, 1)]
    for followee_id, _ in users[1:]:
        for n in {shards.index_of(liker_id), shards.index_of(followee_id)}:
            assert (liker_id, followee_id) in stored_follows[n]

    status = await shard_status(sharded_settings.db)
    assert [found.logical_shards for found in status] == [
        list(range(0, 32, 2)),
        list(range(1, 32, 2)),
    ]
    for found in status:
        users_here = sum(rows for (table, _), rows in found.by_logical.items() if table == "users")
        assert users_here == len(stored_users[found.index])
        assert all(logical in found.logical_shards for (_, logical) in found.by_logical)
        tables = {t.name: t for t in found.tables}
        assert tables["posts"].rows == len(stored_posts[found.index])
        assert tables["posts"].bytes > 0
