"""HTTP routes: follows, followers, following, friends, overview, feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from fastpost.cache import CacheDep
from fastpost.db import DatabaseDep
from fastpost.errors import error_responses
from fastpost.http_caching import cached_response, private_response
from fastpost.pagination import PageQuery
from fastpost.posts.schemas import PostPage
from fastpost.responses import dump_json, json_response
from fastpost.routing import PrefixRouter
from fastpost.security import CurrentUserId, OptionalUserId
from fastpost.social import service
from fastpost.social.schemas import FollowOut, OverviewOut, UserPage

router = PrefixRouter(prefix="/users", tags=["social"])
# Its own prefix, so that every other request skips it on the prefix alone (fastpost.routing).
feed_router = PrefixRouter(prefix="/feed", tags=["social"])

UserIdPath = Annotated[int, Path(ge=1, le=2**53 - 1, description="User id")]


@router.post(
    "/{user_id}/follow", response_model=FollowOut, responses=error_responses(401, 404, 422)
)
async def follow(
    user_id: UserIdPath, me: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Follow a user. Idempotent."""
    await service.follow(db=db, cache=cache, follower_id=me, followee_id=user_id)
    return json_response({"user_id": user_id, "following": True})


@router.delete(
    "/{user_id}/follow", response_model=FollowOut, responses=error_responses(401, 404, 422)
)
async def unfollow(
    user_id: UserIdPath, me: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Stop following a user. Idempotent."""
    await service.unfollow(db=db, cache=cache, follower_id=me, followee_id=user_id)
    return json_response({"user_id": user_id, "following": False})


@router.get("/{user_id}/followers", response_model=UserPage, responses=error_responses(404, 422))
async def followers(user_id: UserIdPath, db: DatabaseDep, params: PageQuery) -> Response:
    """Who follows this user, most recent first."""
    return json_response(
        await service.list_followers(db=db, user_id=user_id, page=params.to_page())
    )


@router.get("/{user_id}/following", response_model=UserPage, responses=error_responses(404, 422))
async def following(user_id: UserIdPath, db: DatabaseDep, params: PageQuery) -> Response:
    """Whom this user follows, most recent first."""
    return json_response(
        await service.list_following(db=db, user_id=user_id, page=params.to_page())
    )


@router.get("/{user_id}/friends", response_model=UserPage, responses=error_responses(404, 422))
async def friends(user_id: UserIdPath, db: DatabaseDep, params: PageQuery) -> Response:
    """Mutual follows: users this user follows who follow them back."""
    return json_response(await service.list_friends(db=db, user_id=user_id, page=params.to_page()))


@router.get(
    "/{user_id}/overview", response_model=OverviewOut, responses=error_responses(401, 404, 422)
)
async def overview(
    request: Request,
    user_id: UserIdPath,
    db: DatabaseDep,
    cache: CacheDep,
    viewer_id: OptionalUserId,
) -> Response:
    """The user, their latest posts and their friends, in one response."""
    if viewer_id is None:
        entry = await service.cached_overview(db=db, cache=cache, user_id=user_id)
        return cached_response(request.headers, entry)
    result = await service.overview(db=db, user_id=user_id, viewer_id=viewer_id)
    return private_response(dump_json(result))


@feed_router.get("", response_model=PostPage, responses=error_responses(401, 422))
async def feed(me: CurrentUserId, db: DatabaseDep, cache: CacheDep, params: PageQuery) -> Response:
    """Posts of the users the caller follows, newest first."""
    page = params.to_page()
    if page.cursor is None and not page.offset:
        body = await service.feed_for_viewer(db=db, cache=cache, user_id=me, limit=page.limit)
        return private_response(body)
    return json_response(await service.feed(db=db, user_id=me, page=page))
