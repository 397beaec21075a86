"""A follow is stored on both users' databases, followee's first; a retry repairs a follow
cut off between the two."""

from __future__ import annotations

from fastpost.db import Database
from fastpost.settings import Settings
from fastpost.shards.router import Shards
from tests.shards.helpers import Api, execute

_FOLLOW_ROWS = "SELECT follower_id, followee_id FROM follows"


async def _two_users_apart(api: Api, shards: Shards) -> list[tuple[int, dict[str, str]]]:
    users: dict[int, tuple[int, dict[str, str]]] = {}
    n = 0
    while len(users) < 2:
        n += 1
        user_id, headers = await api.user(f"apart{n}")
        users.setdefault(shards.index_of(user_id), (user_id, headers))
    return [users[0], users[1]]


async def test_a_follow_writes_a_row_on_each_users_database_and_an_unfollow_removes_both(
    api: Api, shards: Shards, sharded_settings: Settings
) -> None:
    (follower, headers), (followee, _) = await _two_users_apart(api, shards)
    urls = sharded_settings.db.shards
    await api.follow(headers, followee)
    await api.follow(headers, followee)  # idempotent
    for url in urls:
        assert await execute(url, _FOLLOW_ROWS) == [(follower, followee)]
    following = (await api.client.get(f"/users/{follower}/following")).json()["items"]
    followers = (await api.client.get(f"/users/{followee}/followers")).json()["items"]
    assert [user["id"] for user in following] == [followee]
    assert [user["id"] for user in followers] == [follower]
    assert (
        following[0]["username"] == (await api.client.get(f"/users/{followee}")).json()["username"]
    )
    response = await api.client.delete(f"/users/{followee}/follow", headers=headers)
    assert response.status_code == 200
    for url in urls:
        assert await execute(url, _FOLLOW_ROWS) == []


async def test_a_follow_cut_off_after_the_followees_row_answers_503_and_a_retry_completes_it(
    api: Api, shards: Shards, sharded_settings: Settings
) -> None:
    (follower, headers), (followee, followee_headers) = await _two_users_apart(api, shards)
    post_id = await api.post(followee_headers, "Worth following")
    urls = sharded_settings.db.shards
    home = shards.index_of(follower)
    reachable = shards.databases[home]
    # The follower's database stops answering: nothing listens on port 1.
    unreachable = Database(
        reachable.settings.model_copy(
            update={"url": "postgresql+asyncpg://postgres@127.0.0.1:1/gone", "connect_timeout": 1}
        )
    )
    shards.databases[home] = unreachable
    try:
        response = await api.client.post(f"/users/{followee}/follow", headers=headers)
    finally:
        shards.databases[home] = reachable
        await unreachable.dispose()
    assert response.status_code == 503
    assert "retry-after" in response.headers
    # Half done: the followee's row only. The follower's own reads do not see it yet.
    assert await execute(urls[1 - home], _FOLLOW_ROWS) == [(follower, followee)]
    assert await execute(urls[home], _FOLLOW_ROWS) == []
    assert (await api.client.get("/feed", headers=headers)).json()["items"] == []
    assert (await api.client.get(f"/users/{follower}/following")).json()["items"] == []

    await api.follow(headers, followee)  # the client's retry
    for url in urls:
        assert await execute(url, _FOLLOW_ROWS) == [(follower, followee)]
    feed = (await api.client.get("/feed", headers=headers)).json()["items"]
    assert [post["id"] for post in feed] == [post_id]


async def test_following_yourself_or_nobody_is_refused(api: Api) -> None:
    user_id, headers = await api.user("lonely")
    response = await api.client.post(f"/users/{user_id}/follow", headers=headers)
    assert response.status_code == 422
    response = await api.client.post(f"/users/{user_id + 1000}/follow", headers=headers)
    assert response.status_code == 404
    assert (await api.client.get(f"/users/{user_id + 1000}/followers")).status_code == 404
