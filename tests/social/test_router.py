"""Follows, followers, following, friends, the overview and the feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fastpost.social.models import Follow
from tests.conftest import Factory, TestUser
from tests.helpers import database_of, databases_of
from tests.posts.test_router import delete_account, error_fields, ids_of, walk_pages

T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


async def follow(client: httpx.AsyncClient, who: TestUser, whom: TestUser | int) -> httpx.Response:
    target = whom if isinstance(whom, int) else whom.id
    return await client.post(f"/users/{target}/follow", headers=who.headers)


async def unfollow(
    client: httpx.AsyncClient, who: TestUser, whom: TestUser | int
) -> httpx.Response:
    target = whom if isinstance(whom, int) else whom.id
    return await client.delete(f"/users/{target}/follow", headers=who.headers)


async def follow_rows(app: FastAPI) -> int:
    """How many follows are stored (sharded mode keeps each on both users' databases)."""
    stored: set[tuple[int, int]] = set()
    for db in databases_of(app):
        async with db.reader() as conn:
            rows = await conn.execute(select(Follow.follower_id, Follow.followee_id))
            stored.update((follower, followee) for follower, followee in rows.all())
    return len(stored)


def usernames(response: httpx.Response) -> list[str]:
    return [u["username"] for u in response.json()["items"]]


# --- follow and unfollow --------------------------------------------------------------


async def test_follow_is_idempotent(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    alice, bob = await factory.users(2)
    first = await follow(client, alice, bob)
    assert first.status_code == 200
    assert first.json() == {"user_id": bob.id, "following": True}
    second = await follow(client, alice, bob)
    assert second.json() == {"user_id": bob.id, "following": True}
    assert await follow_rows(app) == 1
    followers = await client.get(f"/users/{bob.id}/followers")
    assert [u["id"] for u in followers.json()["items"]] == [alice.id]


async def test_unfollow_is_idempotent(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    alice, bob = await factory.users(2)
    await follow(client, alice, bob)
    first = await unfollow(client, alice, bob)
    assert first.status_code == 200
    assert first.json() == {"user_id": bob.id, "following": False}
    second = await unfollow(client, alice, bob)
    assert second.status_code == 200
    assert second.json() == {"user_id": bob.id, "following": False}
    assert await follow_rows(app) == 0
    assert (await client.get(f"/users/{bob.id}/followers")).json()["items"] == []


async def test_following_yourself_is_422(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    alice = await factory.user()
    response = await follow(client, alice, alice)
    assert response.status_code == 422
    assert response.json()["code"] == "follow_self"
    assert error_fields(response) == {"user_id"}
    assert await follow_rows(app) == 0


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_following_an_unknown_user_is_404(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, method: str
) -> None:
    alice = await factory.user()
    response = await client.request(method, "/users/999999/follow", headers=alice.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert await follow_rows(app) == 0


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_following_requires_a_bearer_token(
    client: httpx.AsyncClient, factory: Factory, method: str
) -> None:
    bob = await factory.user()
    response = await client.request(method, f"/users/{bob.id}/follow")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("user_id", ["0", "abc", str(2**53)])
async def test_following_a_malformed_user_id_is_422(
    client: httpx.AsyncClient, factory: Factory, user_id: str
) -> None:
    alice = await factory.user()
    response = await client.post(f"/users/{user_id}/follow", headers=alice.headers)
    assert response.status_code == 422
    assert error_fields(response) == {"user_id"}


# --- followers, following, friends ----------------------------------------------------


async def test_followers_and_following_list_the_most_recent_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    star = await factory.user("star")
    fans = [await factory.user(f"fan{i}") for i in range(3)]
    for fan in fans:
        assert (await follow(client, fan, star)).status_code == 200
    followers = await client.get(f"/users/{star.id}/followers")
    assert followers.status_code == 200
    assert usernames(followers) == ["fan2", "fan1", "fan0"]
    assert followers.json()["next_cursor"] is None
    assert followers.json()["items"][0] == {"id": fans[2].id, "username": "fan2", "image": None}

    await follow(client, fans[2], fans[1])
    await follow(client, fans[2], fans[0])
    await follow(client, fans[2], star)  # again: keeps its place as the oldest follow
    following = await client.get(f"/users/{fans[2].id}/following")
    assert usernames(following) == ["fan0", "fan1", "star"]
    # Star follows nobody; fan0 is followed by nobody.
    assert (await client.get(f"/users/{star.id}/following")).json()["items"] == []
    assert usernames(await client.get(f"/users/{fans[0].id}/followers")) == ["fan2"]


async def test_friends_are_mutual_follows_only(client: httpx.AsyncClient, factory: Factory) -> None:
    me = await factory.user("me")
    mutual = await factory.user("mutual")
    i_follow = await factory.user("i_follow")
    follows_me = await factory.user("follows_me")
    await factory.follow(me, mutual)
    await factory.follow(mutual, me)
    await factory.follow(me, i_follow)
    await factory.follow(follows_me, me)
    response = await client.get(f"/users/{me.id}/friends")
    assert response.status_code == 200
    assert usernames(response) == ["mutual"]
    assert usernames(await client.get(f"/users/{mutual.id}/friends")) == ["me"]
    assert usernames(await client.get(f"/users/{i_follow.id}/friends")) == []
    # Unfollowing ends the friendship on both sides.
    await unfollow(client, mutual, me)
    assert usernames(await client.get(f"/users/{me.id}/friends")) == []
    assert usernames(await client.get(f"/users/{mutual.id}/friends")) == []


async def _hub_of_seven(factory: Factory, relation: str) -> tuple[TestUser, list[TestUser]]:
    """A user with seven others in `relation` to them (their followers, whom they follow,
    or friends: both)."""
    hub = await factory.user("hub")
    others = await factory.users(7)
    for other in others:
        if relation in ("followers", "friends"):
            await factory.follow(other, hub)
        if relation in ("following", "friends"):
            await factory.follow(hub, other)
    return hub, others


@pytest.mark.unsharded(
    "offset paging of the native API is refused (422) in sharded mode, cursors only: "
    "tests/shards/test_lists.py"
)
@pytest.mark.parametrize("relation", ["followers", "following", "friends"])
async def test_user_lists_skip_offset_users(
    client: httpx.AsyncClient, factory: Factory, relation: str
) -> None:
    hub, others = await _hub_of_seven(factory, relation)
    offset = await client.get(f"/users/{hub.id}/{relation}?offset=5")
    assert [u["id"] for u in offset.json()["items"]] == [u.id for u in reversed(others)][5:]


@pytest.mark.parametrize("relation", ["followers", "following", "friends"])
async def test_user_lists_walk_every_user_once_with_next_cursor(
    client: httpx.AsyncClient, factory: Factory, relation: str
) -> None:
    hub, others = await _hub_of_seven(factory, relation)
    pages = await walk_pages(client, f"/users/{hub.id}/{relation}", limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    walked = [user_id for page in pages for user_id in page]
    assert walked == [u.id for u in reversed(others)]
    assert (await client.get(f"/users/{hub.id}/{relation}?limit=101")).status_code == 422
    bad_cursor = await client.get(f"/users/{hub.id}/{relation}?cursor=nonsense")
    assert bad_cursor.status_code == 422
    assert error_fields(bad_cursor) == {"cursor"}


async def test_user_lists_break_ties_of_the_same_follow_time_by_id(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    hub = await factory.user()
    fans = await factory.users(5)
    for fan in fans:
        await factory.follow(fan, hub, created_at=T0)
    pages = await walk_pages(client, f"/users/{hub.id}/followers", limit=2)
    assert [user_id for page in pages for user_id in page] == sorted(
        (f.id for f in fans), reverse=True
    )


@pytest.mark.parametrize("relation", ["followers", "following", "friends"])
async def test_user_lists_of_an_unknown_user_are_404(
    client: httpx.AsyncClient, relation: str
) -> None:
    response = await client.get(f"/users/999999/{relation}")
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert (await client.get(f"/users/0/{relation}")).status_code == 422


@pytest.mark.parametrize("relation", ["followers", "following", "friends"])
async def test_user_lists_of_a_user_with_nobody_are_empty(
    client: httpx.AsyncClient, factory: Factory, relation: str
) -> None:
    loner = await factory.user()
    response = await client.get(f"/users/{loner.id}/{relation}")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


# --- overview -------------------------------------------------------------------------


async def test_overview_returns_the_user_their_latest_five_posts_and_ten_friends(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user("profiled", bio="Writes about speed")
    posts = [await factory.post(user, created_at=T0 + timedelta(seconds=i)) for i in range(7)]
    await factory.post(user, status="draft", created_at=T0 + timedelta(days=1))
    friends = await factory.users(12)
    for friend in friends:
        await factory.follow(user, friend)
        await factory.follow(friend, user)
    one_way = await factory.user()
    await factory.follow(one_way, user)

    response = await client.get(f"/users/{user.id}/overview")
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["id"] == user.id
    assert body["user"]["username"] == "profiled"
    assert body["user"]["bio"] == "Writes about speed"
    assert "email" not in body["user"]
    assert [p["id"] for p in body["latest_posts"]] == posts[:1:-1]
    assert all(p["author"]["id"] == user.id for p in body["latest_posts"])
    assert all(p["liked_by_me"] is None for p in body["latest_posts"])
    assert [f["id"] for f in body["friends"]] == [f.id for f in friends[:1:-1]]


async def test_overview_of_a_new_user_has_empty_lists(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    body = (await client.get(f"/users/{user.id}/overview", headers=user.headers)).json()
    assert body["user"]["id"] == user.id
    assert (body["latest_posts"], body["friends"]) == ([], [])


async def test_overview_tells_a_logged_in_viewer_what_they_liked(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, viewer = await factory.users(2)
    liked = await factory.post(author, created_at=T0)
    await factory.post(author, created_at=T0 + timedelta(seconds=1))
    await client.post(f"/posts/{liked}/like", headers=viewer.headers)
    body = (await client.get(f"/users/{author.id}/overview", headers=viewer.headers)).json()
    assert [p["liked_by_me"] for p in body["latest_posts"]] == [False, True]


async def test_overview_of_an_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/users/999999/overview")
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert (await client.get("/users/abc/overview")).status_code == 422


# --- feed -----------------------------------------------------------------------------


async def test_feed_shows_followed_authors_published_posts_newest_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    me, followed1, followed2, stranger = await factory.users(4)
    await factory.follow(me, followed1)
    await factory.follow(me, followed2)
    await factory.follow(stranger, me)  # being followed adds nothing to my feed
    a = await factory.post(followed1, created_at=T0)
    b = await factory.post(followed2, created_at=T0 + timedelta(seconds=2))
    c = await factory.post(followed1, created_at=T0 + timedelta(seconds=1))
    await factory.post(followed1, status="draft", created_at=T0 + timedelta(seconds=3))
    await factory.post(stranger, created_at=T0 + timedelta(seconds=4))
    await factory.post(me, created_at=T0 + timedelta(seconds=5))
    response = await client.get("/feed", headers=me.headers)
    assert response.status_code == 200
    assert ids_of(response) == [b, c, a]
    assert response.json()["next_cursor"] is None
    assert all(p["liked_by_me"] is False for p in response.json()["items"])


async def test_feed_follows_and_unfollows_take_effect(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    me, author = await factory.users(2)
    post_id = await factory.post(author)
    assert ids_of(await client.get("/feed", headers=me.headers)) == []
    await follow(client, me, author)
    assert ids_of(await client.get("/feed", headers=me.headers)) == [post_id]
    await unfollow(client, me, author)
    assert ids_of(await client.get("/feed", headers=me.headers)) == []


async def test_feed_is_keyset_paginated(client: httpx.AsyncClient, factory: Factory) -> None:
    me, alice, bob = await factory.users(3)
    await factory.follow(me, alice)
    await factory.follow(me, bob)
    made = []
    for i, stamp in enumerate([0, 0, 1, 1, 1, 2, 3, 3]):
        author = alice if i % 2 else bob
        created_at = T0 + timedelta(seconds=stamp)
        made.append((created_at, await factory.post(author, created_at=created_at)))
    expected = [post_id for _, post_id in sorted(made, reverse=True)]
    pages = await walk_pages(client, "/feed", headers=me.headers, limit=3)
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [post_id for page in pages for post_id in page] == expected


async def test_feed_requires_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/feed")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_overview_of_an_unknown_user_leaves_no_read_running_behind(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # The three reads run concurrently; when one fails the others must be finished (or
    # cancelled) by the time the 404 is sent, not left holding pooled connections.
    response = await client.get("/users/999999/overview")
    assert response.status_code == 404
    for db in databases_of(app):
        assert db.read_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.unsharded(
    "deletes the account behind the cache's back; unsharded the follow's foreign key finds "
    "it gone, sharded follows carry none across databases (router.CROSS_SHARD_FOREIGN_KEYS): "
    "the account check refuses the token once the cached account goes, as "
    "tests/users/test_accounts.py shows"
)
async def test_following_with_the_token_of_a_deleted_account_is_401(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    gone, bob = await factory.users(2)
    await delete_account(app, gone)
    response = await follow(client, gone, bob)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "account_gone"
    assert await follow_rows(app) == 0


async def test_a_deactivated_account_can_still_be_unfollowed(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    from sqlalchemy import update

    from fastpost.users.models import User

    fan, gone = await factory.users(2)
    await factory.follow(fan, gone)
    async with database_of(app, gone.id).transaction() as session:
        await session.execute(update(User).where(User.id == gone.id).values(is_active=False))
    assert (await client.post(f"/users/{gone.id}/follow", headers=fan.headers)).status_code == 404
    response = await client.delete(f"/users/{gone.id}/follow", headers=fan.headers)
    assert response.status_code == 200
    following = await client.get(f"/users/{fan.id}/following")
    assert following.json()["items"] == []
