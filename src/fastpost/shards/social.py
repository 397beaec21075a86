"""Follows and the feed in sharded mode.

A follow is stored twice: on the follower's database ("whom do I follow": the feed, the
following list) and on the followee's ("who follows me", and the `following` flag of a
reader of the followee's posts, which live with the followee). When both users share a
database the two are one row. Writes go to the followee's database first, then the
follower's, each idempotent on its own (INSERT ... ON CONFLICT DO NOTHING, DELETE): a
failure between the two answers 503, and the client's retry completes the follow. The
follower's own reads (the feed, their following list) start from their row, so they see
the follow only once both rows exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, partial
from typing import Any

from sqlalchemy import BigInteger, Select, bindparam, exists, select

from fastpost.bound_lists import one_of
from fastpost.cache import Cache, Entry
from fastpost.db import Row
from fastpost.errors import InvalidInput, NotFound
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.posts.queries import PostRead, posts, select_posts, users
from fastpost.shards.merge import fetch_each, merge_sorted
from fastpost.shards.posts import refuse_offset
from fastpost.shards.router import Shards
from fastpost.social import service as social_service
from fastpost.social.service import follows
from fastpost.timeutil import utcnow
from fastpost.writes import Step, WriteProgram

_FOLLOWEE_ID = bindparam("followee_id", type_=BigInteger)
_FOLLOWEE_ACTIVE = select(users.c.id).where(users.c.id == _FOLLOWEE_ID, users.c.is_active)
_FOLLOWEE_ANY = select(users.c.id).where(users.c.id == _FOLLOWEE_ID)


def _follow_on_followee(dialect: str, params: dict[str, Any]) -> WriteProgram[None]:
    if not (yield Step(_FOLLOWEE_ACTIVE, params)):
        raise NotFound("User not found", code="user_not_found")
    yield Step(social_service.add_follow(dialect), params)


def _follow_on_follower(dialect: str, params: dict[str, Any]) -> WriteProgram[None]:
    yield Step(social_service.add_follow(dialect), params)


def _unfollow_on_followee(params: dict[str, Any]) -> WriteProgram[None]:
    # A deactivated account can still be unfollowed: its follow rows are still there.
    if not (yield Step(_FOLLOWEE_ANY, params)):
        raise NotFound("User not found", code="user_not_found")
    yield Step(social_service.REMOVE_FOLLOW, params)


def _unfollow_on_follower(params: dict[str, Any]) -> WriteProgram[None]:
    yield Step(social_service.REMOVE_FOLLOW, params)


async def set_follow(
    *, shards: Shards, cache: Cache, follower_id: int, followee_id: int, following: bool
) -> None:
    """Follow (or stop following) a user: the followee's row, then the follower's."""
    if following and follower_id == followee_id:
        raise InvalidInput("You cannot follow yourself", code="follow_self", field="user_id")
    params = {"follower_id": follower_id, "followee_id": followee_id, "now": utcnow()}
    # Each side through the write gate of its own logical shard (one may be frozen by a
    # move); the databases are those named once the gate opens.
    async with shards.writing_for(followee_id) as followee_db:
        if following:
            await followee_db.write(_follow_on_followee(followee_db.dialect, params))
        else:
            await followee_db.write(_unfollow_on_followee(params))
    async with shards.writing_for(follower_id) as follower_db:
        if follower_db is not followee_db:  # else the row just written serves both
            if following:
                await follower_db.write(_follow_on_follower(follower_db.dialect, params))
            else:
                await follower_db.write(_unfollow_on_follower(params))
    await social_service.invalidate_friends(cache, follower_id, followee_id)


# Followers and following: the page of follow rows from the user's own database (one
# statement), then the page's profiles from their databases, one statement per database
# concerned, at once. The profile of someone on another database is not on this one.
_USER_ID = bindparam("user_id", type_=BigInteger)


@cache
def _follow_rows(direction: str, shape: tuple[bool, bool]) -> Select[Any]:
    mine, other = (
        (follows.c.followee_id, follows.c.follower_id)
        if direction == "followers"
        else (follows.c.follower_id, follows.c.followee_id)
    )
    stmt = select(other.label("id"), follows.c.created_at.label("followed_at")).where(
        mine == _USER_ID
    )
    if direction == "friends":
        # Mutual follows: both rows are on the user's database (theirs, and the copy of
        # the follow back that names them as followee).
        back = follows.alias("back")
        stmt = stmt.where(
            exists().where(back.c.follower_id == other, back.c.followee_id == _USER_ID)
        )
    return keyset_page(stmt, shape, follows.c.created_at, other)


PROFILES = select(users.c.id, users.c.username, users.c.image).where(
    one_of(users.c.id, "user_ids", dialect="postgresql", item_type=BigInteger())
)


def _cursor_of(row: Any) -> Cursor:
    return Cursor(row["followed_at"], row["id"])


async def list_follows(
    *, shards: Shards, user_id: int, page: Page, direction: str
) -> dict[str, Any]:
    """Who follows user_id (direction "followers"), whom they follow ("following") or both
    ("friends"), most recent first."""
    refuse_offset(page)
    db = shards.for_id(user_id)
    rows = await db.fetch_all(
        _follow_rows(direction, page.shape), {**page.params, "user_id": user_id}
    )
    if not rows and page.cursor is None:
        await social_service.ensure_user(db, user_id)
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": await _summaries(shards, items), "next_cursor": cursor}


async def _summaries(shards: Shards, items: Sequence[Row]) -> list[dict[str, Any]]:
    """The profiles (id, username, image) of the users of `items`, in their order."""
    groups = shards.group_by_database(row["id"] for row in items)
    databases = [shards.databases[n] for n in groups]
    found = await fetch_each(databases, PROFILES, [{"user_ids": ids} for ids in groups.values()])
    profiles = {row["id"]: row for rows_of_db in found for row in rows_of_db}
    # An account deleted since (its follow rows elsewhere outlive it) is left out.
    return [
        {"id": p["id"], "username": p["username"], "image": p["image"]}
        for p in (profiles.get(row["id"]) for row in items)
        if p is not None
    ]


# The feed: the caller's followees from the caller's database (one statement), then on each
# database hosting some of them, the page of those authors' posts (one statement each),
# merged. The narrow subquery is the unsharded feed's (fastpost.posts.queries.feed_statement)
# with the list of authors in place of the join on follows.
_FOLLOWEES = select(follows.c.followee_id).where(
    follows.c.follower_id == bindparam("viewer_id", type_=BigInteger)
)
_FEED = PostRead(viewer=True)


@cache
def _feed_statement(shape: tuple[bool, bool]) -> Select[Any]:
    page = keyset_page(
        select(posts.c.id, posts.c.created_at).where(
            one_of(posts.c.author_id, "author_ids", dialect="postgresql", item_type=BigInteger()),
            posts.c.status == queries.PUBLISHED,
        ),
        shape,
        posts.c.created_at,
        posts.c.id,
    ).subquery("page")
    return (
        select_posts(_FEED)
        .join(page, page.c.id == posts.c.id)
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


async def feed(*, shards: Shards, user_id: int, page: Page) -> dict[str, Any]:
    """Published posts of the users user_id follows, newest first."""
    refuse_offset(page)
    followees = await shards.for_id(user_id).fetch_all(_FOLLOWEES, {"viewer_id": user_id})
    groups = shards.group_by_database(row["followee_id"] for row in followees)
    if not groups:
        return {"items": [], "next_cursor": None}
    databases = [shards.databases[n] for n in groups]
    params = [{**page.params, "viewer_id": user_id, "author_ids": ids} for ids in groups.values()]
    pages = await fetch_each(databases, _feed_statement(page.shape), params)
    return posts_service.post_page(merge_sorted(pages, page.limit + 1), page, user_id)


async def overview(*, shards: Shards, user_id: int, viewer_id: int | None) -> dict[str, Any]:
    """A user, their latest posts and their friends: the user's database for all three
    (at once, as unsharded), then the friends' profiles from theirs."""
    db = shards.for_id(user_id)

    async def friends() -> list[dict[str, Any]]:
        page = Page(social_service.OVERVIEW_FRIENDS, None, 0)
        rows = await db.fetch_all(
            _follow_rows("friends", page.shape), {**page.params, "user_id": user_id}
        )
        return await _summaries(shards, rows[: social_service.OVERVIEW_FRIENDS])

    return await social_service.gather_overview(
        db=db, user_id=user_id, viewer_id=viewer_id, friends=friends()
    )


async def cached_overview(*, shards: Shards, cache: Cache, user_id: int) -> Entry:
    """The overview as an anonymous caller sees it, under the unsharded key and tags."""
    return await social_service.cache_overview(
        cache=cache,
        user_id=user_id,
        read=partial(overview, shards=shards, user_id=user_id, viewer_id=None),
    )
