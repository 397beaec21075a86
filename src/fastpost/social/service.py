"""What the social domain does: follows, followers, friends (mutual follows), the feed and
the user overview."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Row, and_, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from fastpost.db import Database, insert_ignoring_conflicts, table_of
from fastpost.errors import InvalidInput, NotFound, Unauthorized
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts import service as posts_service
from fastpost.posts.models import PostStatus
from fastpost.social.models import Follow
from fastpost.timeutil import utcnow
from fastpost.users import service as users_service
from fastpost.users.models import User

follows = table_of(Follow)
users = table_of(User)
posts = posts_service.posts

OVERVIEW_POSTS = 5
OVERVIEW_FRIENDS = 10


async def _ensure_user(conn: AsyncConnection | AsyncSession, user_id: int) -> None:
    found = await conn.scalar(select(users.c.id).where(users.c.id == user_id, users.c.is_active))
    if found is None:
        raise NotFound("User not found", code="user_not_found")


async def follow(*, session: AsyncSession, follower_id: int, followee_id: int) -> None:
    """Follow a user; following again changes nothing."""
    if follower_id == followee_id:
        raise InvalidInput("You cannot follow yourself", code="follow_self", field="user_id")
    # Both ends in one round trip: the caller's token can outlive its account, and the
    # insert below would then fail on the foreign key (a 500) instead of answering 401.
    rows = await session.execute(
        select(users.c.id, users.c.is_active).where(users.c.id.in_((follower_id, followee_id)))
    )
    found: dict[int, bool] = {row.id: row.is_active for row in rows}
    if follower_id not in found:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if not found.get(followee_id):
        raise NotFound("User not found", code="user_not_found")
    try:
        await session.execute(
            insert_ignoring_conflicts(session, follows).values(
                follower_id=follower_id, followee_id=followee_id, created_at=utcnow()
            )
        )
    except IntegrityError:
        # One of the two accounts was deleted since the check above.
        raise NotFound("User not found", code="user_not_found") from None


async def unfollow(*, session: AsyncSession, follower_id: int, followee_id: int) -> None:
    """Stop following a user; a follow that is not there changes nothing."""
    await _ensure_user(session, followee_id)
    await session.execute(
        follows.delete().where(
            follows.c.follower_id == follower_id, follows.c.followee_id == followee_id
        )
    )


def _summary(row: Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "image": row.image}


def _cursor_of(row: Row[Any]) -> Cursor:
    return Cursor(row.followed_at, row.id)


async def _user_page(conn: AsyncConnection, stmt: Any, page: Page, user_id: int) -> dict[str, Any]:
    rows = (await conn.execute(stmt)).all()
    if not rows and page.cursor is None and not page.offset:
        # Only an empty first page pays for telling "no followers" from "no such user".
        await _ensure_user(conn, user_id)
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [_summary(r) for r in items], "next_cursor": cursor}


def _users_via(join_on: Any) -> Any:
    return select(
        users.c.id, users.c.username, users.c.image, follows.c.created_at.label("followed_at")
    ).select_from(follows.join(users, join_on))


async def list_followers(*, conn: AsyncConnection, user_id: int, page: Page) -> dict[str, Any]:
    """Users who follow user_id, most recent first."""
    stmt = _users_via(users.c.id == follows.c.follower_id).where(follows.c.followee_id == user_id)
    stmt = keyset_page(stmt, page, follows.c.created_at, follows.c.follower_id)
    return await _user_page(conn, stmt, page, user_id)


async def list_following(*, conn: AsyncConnection, user_id: int, page: Page) -> dict[str, Any]:
    """Users whom user_id follows, most recently followed first."""
    stmt = _users_via(users.c.id == follows.c.followee_id).where(follows.c.follower_id == user_id)
    stmt = keyset_page(stmt, page, follows.c.created_at, follows.c.followee_id)
    return await _user_page(conn, stmt, page, user_id)


def _friends_statement(user_id: int, page: Page) -> Any:
    back = follows.alias("back")
    stmt = _users_via(users.c.id == follows.c.followee_id).where(
        follows.c.follower_id == user_id,
        exists().where(
            and_(back.c.follower_id == follows.c.followee_id, back.c.followee_id == user_id)
        ),
    )
    return keyset_page(stmt, page, follows.c.created_at, follows.c.followee_id)


async def list_friends(*, conn: AsyncConnection, user_id: int, page: Page) -> dict[str, Any]:
    """Users who follow user_id and whom user_id follows back."""
    return await _user_page(conn, _friends_statement(user_id, page), page, user_id)


async def feed(*, conn: AsyncConnection, user_id: int, page: Page) -> dict[str, Any]:
    """Published posts of the users user_id follows, newest first."""
    stmt = (
        posts_service.select_posts(user_id)
        .join(follows, follows.c.followee_id == posts.c.author_id)
        .where(follows.c.follower_id == user_id, posts.c.status == PostStatus.published)
    )
    rows = (await conn.execute(posts_service.newest_first(stmt, page))).all()
    return posts_service.post_page(rows, page, user_id)


async def overview(*, db: Database, user_id: int, viewer_id: int | None) -> dict[str, Any]:
    """A user, their latest posts and their friends, read concurrently."""

    # One AsyncConnection cannot run two statements at once, so each read takes its own
    # connection from the pool; the three round trips overlap instead of adding up.
    async def profile() -> Any:
        async with db.reader() as conn:
            return await users_service.get_profile(conn=conn, user_id=user_id)

    async def latest_posts() -> Any:
        async with db.reader() as conn:
            page = await posts_service.list_posts(
                conn=conn,
                viewer_id=viewer_id,
                page=Page(OVERVIEW_POSTS, None, 0),
                author_id=user_id,
            )
            return page["items"]

    async def friends() -> Any:
        async with db.reader() as conn:
            rows = await conn.execute(_friends_statement(user_id, Page(OVERVIEW_FRIENDS, None, 0)))
            return [_summary(r) for r in rows.all()[:OVERVIEW_FRIENDS]]

    # return_exceptions: when one read fails (an unknown user's profile), gather would raise
    # at once and leave the other two running past the response, holding pooled connections;
    # waiting costs nothing, since the reads overlap, and then the first failure is raised.
    results = await asyncio.gather(profile(), latest_posts(), friends(), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    user, latest, friend_list = results
    return {"user": user, "latest_posts": latest, "friends": friend_list}
