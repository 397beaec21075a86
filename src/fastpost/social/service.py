"""What the social domain does: follows, followers, friends (mutual follows), the feed and
the user overview."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cache, partial
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    bindparam,
    cast,
    exists,
    false,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost import cache_keys
from fastpost.cache import Cache, Entry
from fastpost.db import Database, Row, table_of
from fastpost.errors import InvalidInput, NotFound, Unauthorized
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.posts.queries import PostRead
from fastpost.responses import dump_json
from fastpost.social.models import Follow
from fastpost.timeutil import utcnow
from fastpost.users import service as users_service
from fastpost.users.models import User
from fastpost.writes import Step, WriteProgram, insert_or_ignore

follows = table_of(Follow)
users = table_of(User)
posts = posts_service.posts

OVERVIEW_POSTS = 5
OVERVIEW_FRIENDS = 10


_USER_ID = bindparam("user_id", type_=BigInteger)
_ACTIVE_USER = select(users.c.id).where(users.c.id == _USER_ID, users.c.is_active)
_ANY_USER = select(users.c.id).where(users.c.id == _USER_ID)
_FOLLOWEE_ID = bindparam("followee_id", type_=BigInteger)
_ANY_FOLLOWEE = select(users.c.id).where(users.c.id == _FOLLOWEE_ID)


async def ensure_user(
    source: Database | AsyncSession, user_id: int, *, active: bool = True
) -> None:
    """Raise NotFound unless user_id exists (and, with `active`, is active)."""
    stmt = _ACTIVE_USER if active else _ANY_USER
    if isinstance(source, Database):
        found = await source.fetch_one(stmt, {"user_id": user_id})
    else:
        found = await source.scalar(stmt, {"user_id": user_id})
    if found is None:
        raise NotFound("User not found", code="user_not_found")


async def invalidate_friends(cache: Cache, follower_id: int, followee_id: int) -> None:
    """Drop what a follow or unfollow made stale; call it after the commit."""
    # Friends are mutual follows: both users' overviews may change. The follower's feed
    # gains or loses the followee's posts.
    await cache.invalidate(
        tags=[
            cache_keys.overview_tag(follower_id),
            cache_keys.overview_tag(followee_id),
            cache_keys.following_tag(follower_id),
        ]
    )


_BOTH_USERS = select(users.c.id, users.c.is_active).where(
    users.c.id.in_([bindparam("follower_id", type_=BigInteger), _FOLLOWEE_ID])
)


@cache
def add_follow(dialect: str) -> Any:
    """Insert the follow of :followee_id by :follower_id unless there is one."""
    return insert_or_ignore(dialect, follows).values(
        follower_id=bindparam("follower_id", type_=BigInteger),
        followee_id=_FOLLOWEE_ID,
        created_at=bindparam("now", type_=follows.c.created_at.type),
    )


REMOVE_FOLLOW = follows.delete().where(
    follows.c.follower_id == bindparam("follower_id", type_=BigInteger),
    follows.c.followee_id == _FOLLOWEE_ID,
)


def follow_steps(dialect: str, params: dict[str, Any]) -> WriteProgram[None]:
    """Make follower_id follow followee_id (a write program: see fastpost.writes)."""
    if params["follower_id"] == params["followee_id"]:
        raise InvalidInput("You cannot follow yourself", code="follow_self", field="user_id")
    # Both ends in one statement: the caller's token can outlive its account, and the
    # insert would then fail on the foreign key (a 500) instead of answering 401.
    rows = yield Step(_BOTH_USERS, params)
    found: dict[int, bool] = {row[0]: bool(row[1]) for row in rows}
    if params["follower_id"] not in found:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if not found.get(params["followee_id"]):
        raise NotFound("User not found", code="user_not_found")
    yield Step(add_follow(dialect), params)


def unfollow_steps(params: dict[str, Any]) -> WriteProgram[None]:
    """Make follower_id stop following followee_id (a write program)."""
    # A deactivated account can still be unfollowed: its follow rows are still there.
    if not (yield Step(_ANY_FOLLOWEE, params)):
        raise NotFound("User not found", code="user_not_found")
    yield Step(REMOVE_FOLLOW, params)


async def follow(*, db: Database, cache: Cache, follower_id: int, followee_id: int) -> None:
    """Follow a user; following again changes nothing."""
    params = {"follower_id": follower_id, "followee_id": followee_id, "now": utcnow()}
    try:
        await db.write(follow_steps(db.dialect, params))
    except IntegrityError:
        # One of the two accounts was deleted since the check.
        raise NotFound("User not found", code="user_not_found") from None
    await invalidate_friends(cache, follower_id, followee_id)


async def unfollow(*, db: Database, cache: Cache, follower_id: int, followee_id: int) -> None:
    """Stop following a user; a follow that is not there changes nothing."""
    params = {"follower_id": follower_id, "followee_id": followee_id}
    await db.write(unfollow_steps(params))
    await invalidate_friends(cache, follower_id, followee_id)


# Profiles by username (the RealWorld API names users so): the user's public columns and
# whether :viewer_id follows them.
@cache
def _profile_statement(with_viewer: bool) -> Select[Any]:
    stmt = select(users.c.id, users.c.username, users.c.bio, users.c.image).where(
        users.c.username == bindparam("username", type_=String), users.c.is_active
    )
    following = queries.following(users.c.id) if with_viewer else false()
    return stmt.add_columns(following.label("following"))


async def profile_by_username(*, db: Database, viewer_id: int | None, username: str) -> Row:
    """Return an active user's profile (id, username, bio, image) and whether the viewer
    follows them; 404 when there is no such user."""
    stmt = _profile_statement(viewer_id is not None)
    row = await db.fetch_one(stmt, {"username": username, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("User not found", code="user_not_found")
    return row


# A follow by username: the target's profile and whether the caller's account still exists,
# in the one statement that the follow then needs (as _BOTH_USERS does by id).
_TARGET_BY_USERNAME = select(
    users.c.id,
    users.c.username,
    users.c.bio,
    users.c.image,
    select(users.c.id)
    .where(users.c.id == bindparam("follower_id", type_=BigInteger))
    .exists()
    .label("account"),
).where(users.c.username == bindparam("username", type_=String), users.c.is_active)


def change_follow_by_username_steps(
    dialect: str, params: dict[str, Any], *, follow: bool
) -> WriteProgram[dict[str, Any]]:
    """Make :follower_id follow (or stop following) the active user named :username (a
    write program); return that user's id, username, bio and image."""
    rows = yield Step(_TARGET_BY_USERNAME, params)
    if not rows:
        raise NotFound("User not found", code="user_not_found")
    target = dict(rows[0])
    if not target.pop("account"):
        raise Unauthorized("Account no longer exists", code="account_gone")
    change = {**params, "followee_id": target["id"]}
    if change["follower_id"] == change["followee_id"]:
        raise InvalidInput("You cannot follow yourself", code="follow_self", field="user_id")
    yield Step(add_follow(dialect) if follow else REMOVE_FOLLOW, change)
    return target


async def change_follow_by_username(
    *, db: Database, cache: Cache, follower_id: int, username: str, follow: bool
) -> dict[str, Any]:
    """Follow (or stop following) a user by name, in two statements; return their profile
    (id, username, bio, image)."""
    params = {"follower_id": follower_id, "username": username, "now": utcnow()}
    try:
        target = await db.write(change_follow_by_username_steps(db.dialect, params, follow=follow))
    except IntegrityError:
        # The account was deleted since the check.
        raise NotFound("User not found", code="user_not_found") from None
    await invalidate_friends(cache, follower_id, target["id"])
    return target


def _summary(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "username": row["username"], "image": row["image"]}


def _cursor_of(row: Row) -> Cursor:
    return Cursor(row["followed_at"], row["id"])


async def _user_page(db: Database, stmt: Select[Any], page: Page, user_id: int) -> dict[str, Any]:
    rows = await db.fetch_all(stmt, {**page.params, "user_id": user_id})
    if not rows and page.cursor is None and not page.offset:
        # Only an empty first page pays for telling "no followers" from "no such user".
        await ensure_user(db, user_id)
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [_summary(r) for r in items], "next_cursor": cursor}


def _users_via(join_on: ColumnElement[bool]) -> Select[Any]:
    return select(
        users.c.id, users.c.username, users.c.image, follows.c.created_at.label("followed_at")
    ).select_from(follows.join(users, join_on))


@cache
def _followers_statement(shape: tuple[bool, bool]) -> Select[Any]:
    stmt = _users_via(users.c.id == follows.c.follower_id).where(follows.c.followee_id == _USER_ID)
    return keyset_page(stmt, shape, follows.c.created_at, follows.c.follower_id)


@cache
def _following_statement(shape: tuple[bool, bool]) -> Select[Any]:
    stmt = _users_via(users.c.id == follows.c.followee_id).where(follows.c.follower_id == _USER_ID)
    return keyset_page(stmt, shape, follows.c.created_at, follows.c.followee_id)


@cache
def _friends_statement(shape: tuple[bool, bool]) -> Select[Any]:
    back = follows.alias("back")
    stmt = _users_via(users.c.id == follows.c.followee_id).where(
        follows.c.follower_id == _USER_ID,
        exists().where(back.c.follower_id == follows.c.followee_id, back.c.followee_id == _USER_ID),
    )
    return keyset_page(stmt, shape, follows.c.created_at, follows.c.followee_id)


async def list_followers(*, db: Database, user_id: int, page: Page) -> dict[str, Any]:
    """Users who follow user_id, most recent first."""
    return await _user_page(db, _followers_statement(page.shape), page, user_id)


async def list_following(*, db: Database, user_id: int, page: Page) -> dict[str, Any]:
    """Users whom user_id follows, most recently followed first."""
    return await _user_page(db, _following_statement(page.shape), page, user_id)


async def list_friends(*, db: Database, user_id: int, page: Page) -> dict[str, Any]:
    """Users who follow user_id and whom user_id follows back."""
    return await _user_page(db, _friends_statement(page.shape), page, user_id)


_FEED = PostRead(viewer=True)


async def feed(*, db: Database, user_id: int, page: Page) -> dict[str, Any]:
    """Published posts of the users user_id follows, newest first."""
    stmt = queries.feed_statement(db.dialect, _FEED, page.shape)
    rows = await db.fetch_all(stmt, {**page.params, "viewer_id": user_id})
    return posts_service.post_page(rows, page, user_id)


_FOLLOWEE_IDS = select(follows.c.followee_id).where(follows.c.follower_id == _USER_ID)


@cache
def _first_feed_page(dialect: str) -> Select[Any]:
    """The feed's first page, each row also carrying whom :viewer_id follows, as
    comma-separated ids (the entry's tags): a cold read stays one statement."""
    followee = cast(follows.c.followee_id, String)
    ids = func.string_agg(followee, ",") if dialect == "postgresql" else func.group_concat(followee)
    # Uncorrelated: evaluated once per statement, not per row.
    followees = select(ids).where(follows.c.follower_id == queries.VIEWER).correlate(None)
    stmt = queries.feed_statement(dialect, _FEED, (False, False))
    return stmt.add_columns(followees.scalar_subquery().label("followees"))


# The first page of a feed is cached per reader and limit, as the logged-in first pages of
# posts are (posts.service, "For a logged-in caller"): the posts, their authors and tags
# shared, likes_count and liked_by_me read per request for the page's ids, in one statement
# (tests/cache/test_feed_cache.py counts them). The entry is dropped by the reader's follows
# and unfollows (following_tag), by every post write of an author they follow
# (author_posts_tag of each followee, not only of the authors shown: a new post goes first
# whoever is on the page now) and by a profile edit of an author shown (user_tag). The
# followees' tags are found by the load, so, as for a list's authors, a write during the
# load can miss the entry in Redis (see fastpost.cache); following_tag is known before it.
# A miss is one statement, as the logged-in lists' are, but for an empty page, which has no
# row to carry the followees and reads them apart.
async def feed_for_viewer(*, db: Database, cache: Cache, user_id: int, limit: int) -> bytes:
    """The first page of user_id's feed as they see it: the shared part from the cache, with
    their flags."""
    page = Page(limit, None, 0)

    async def read() -> tuple[list[Row], list[str]]:
        stmt = _first_feed_page(db.dialect)
        rows = await db.fetch_all(stmt, {**page.params, "viewer_id": user_id})
        if rows:
            followees = [int(f) for f in rows[0]["followees"].split(",")]
        else:
            found = await db.fetch_all(_FOLLOWEE_IDS, {"user_id": user_id})
            followees = [row["followee_id"] for row in found]
        return list(rows), [cache_keys.author_posts_tag(f) for f in sorted(followees)]

    return await posts_service.page_for_viewer(
        db=db,
        cache=cache,
        viewer_id=user_id,
        page=page,
        key=cache_keys.feed(user_id, limit),
        tags=[cache_keys.following_tag(user_id)],
        read=read,
    )


async def overview(*, db: Database, user_id: int, viewer_id: int | None) -> dict[str, Any]:
    """A user, their latest posts and their friends, read concurrently."""

    async def friends() -> list[dict[str, Any]]:
        page = Page(OVERVIEW_FRIENDS, None, 0)
        rows = await db.fetch_all(
            _friends_statement(page.shape), {**page.params, "user_id": user_id}
        )
        return [_summary(r) for r in rows[:OVERVIEW_FRIENDS]]

    return await gather_overview(db=db, user_id=user_id, viewer_id=viewer_id, friends=friends())


async def gather_overview(
    *,
    db: Database,
    user_id: int,
    viewer_id: int | None,
    friends: Awaitable[list[dict[str, Any]]],
) -> dict[str, Any]:
    """Read the user and their latest posts from `db` while `friends` runs; return the
    overview, or raise the first failure once all three are done."""

    # Each read checks out its own pooled connection (one connection cannot run two
    # statements at once), so the three round trips overlap instead of adding up.
    async def latest_posts() -> Any:
        page = await posts_service.list_posts(
            db=db, viewer_id=viewer_id, page=Page(OVERVIEW_POSTS, None, 0), author_id=user_id
        )
        return page["items"]

    # return_exceptions: when one read fails (an unknown user's profile), gather would raise
    # at once and leave the other two running past the response, holding pooled connections;
    # waiting costs nothing, since the reads overlap, and then the first failure is raised.
    results = await asyncio.gather(
        users_service.get_profile(db=db, user_id=user_id),
        latest_posts(),
        friends,
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    user, latest, friend_list = results
    return {"user": user, "latest_posts": latest, "friends": friend_list}


async def cached_overview(*, db: Database, cache: Cache, user_id: int) -> Entry:
    """The overview as an anonymous caller sees it."""
    return await cache_overview(
        cache=cache, user_id=user_id, read=partial(overview, db=db, user_id=user_id, viewer_id=None)
    )


async def cache_overview(
    *, cache: Cache, user_id: int, read: Callable[[], Awaitable[dict[str, Any]]]
) -> Entry:
    """The overview `read` gives an anonymous caller, from the cache, under user_id's key
    and tagged with every user it shows."""

    async def load() -> Entry:
        result = await read()
        shown = {user_id, *(friend["id"] for friend in result["friends"])}
        return Entry.of(dump_json(result), tags=[cache_keys.user_tag(u) for u in sorted(shown)])

    return await cache.get_or_load(
        cache_keys.overview(user_id),
        load,
        ttl=posts_service.LIST_TTL,
        tags=[cache_keys.overview_tag(user_id), cache_keys.author_posts_tag(user_id)],
    )
