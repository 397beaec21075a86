"""The native API's routes in sharded mode, and a 501 for those not ported yet.

create_app mounts these instead of the unsharded routers when FASTPOST_DB__SHARDS is set,
so the unsharded routes pay nothing for sharding (not even a test). Each route here routes
its request to a database (fastpost.shards.Shards) and calls the unsharded service with it
where one database answers the whole request, or the sharded one (fastpost.shards.posts,
users, social, comments) where the request spans databases. Every route of the unsharded routers
that has no counterpart here answers 501 (refuse_unported), so that nothing reads one
database's rows as if they were all of them. The RealWorld API's sharded routes are in
fastpost.shards.realworld.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response, status
from fastapi.routing import APIRoute

from fastpost.cache import CacheDep
from fastpost.comments import router as comments_routes
from fastpost.comments.schemas import CommentCreate, CommentOut, CommentPage
from fastpost.errors import AppError, error_responses
from fastpost.http_caching import cached_response, private_response
from fastpost.pagination import MAX_OFFSET, PageQuery
from fastpost.posts import router as posts_routes
from fastpost.posts import service as posts_service
from fastpost.posts.queries import PostRef
from fastpost.posts.schemas import (
    LikeOut,
    PostCreate,
    PostListParams,
    PostOut,
    PostPage,
    PostUpdate,
)
from fastpost.rate_limits import limit_login, limit_registration
from fastpost.responses import dump_json, json_response
from fastpost.routing import PrefixRouter, add_lean_routes
from fastpost.schemas import SafeText
from fastpost.security import CurrentUserId, OptionalUserId
from fastpost.shards import comments as sharded_comments
from fastpost.shards import posts as sharded_posts
from fastpost.shards import social as sharded_social
from fastpost.shards import users as sharded_users
from fastpost.shards.router import Shards
from fastpost.social.schemas import FollowOut, OverviewOut, UserPage
from fastpost.users import router as users_routes
from fastpost.users import service as users_service
from fastpost.users.schemas import MeOut, MeUpdate, RegisterIn, TokenOut, UserOut

PostIdPath = posts_routes.PostIdPath
UserIdPath = users_routes.UserIdPath


class NotShardedYet(AppError):
    status_code = 501


def _shards(request: Request) -> Shards:
    shards: Shards = request.app.state.shards
    return shards


async def refuse_gone_account(request: Request, user_id: int) -> None:
    """The account check (fastpost.security.AccountCheck), on the account's database."""
    state = request.app.state
    await users_service.cached_me(
        db=_shards(request).for_id(user_id), cache=state.cache, user_id=user_id
    )


auth_router = PrefixRouter(prefix="/auth", tags=["auth"])
users_router = PrefixRouter(prefix="/users", tags=["users"])
posts_router = PrefixRouter(prefix="/posts", tags=["posts"])
feed_router = PrefixRouter(prefix="/feed", tags=["social"])


@auth_router.post(
    "/register", status_code=status.HTTP_201_CREATED, responses=error_responses(409, 413, 422, 429)
)
async def register(body: RegisterIn, request: Request) -> MeOut:
    """Create an account."""
    await limit_registration(request)
    user = await sharded_users.register_user(
        shards=_shards(request),
        passwords=request.app.state.passwords,
        username=body.username,
        email=str(body.email),
        password=body.password,
    )
    return MeOut.model_validate(user)


@auth_router.post(
    "/login",
    openapi_extra={"requestBody": users_routes.LOGIN_BODY},
    responses=error_responses(401, 413, 422, 429),
)
async def login(request: Request) -> TokenOut:
    """Exchange a username and password for a bearer token (JSON or OAuth2 form)."""
    credentials = await users_routes.read_login(request)
    await limit_login(request, credentials.username)
    user_id = await sharded_users.authenticate(
        shards=_shards(request),
        passwords=request.app.state.passwords,
        username=credentials.username,
        password=credentials.password,
        cache=request.app.state.cache,
    )
    issued = request.app.state.tokens.issue(user_id)
    return TokenOut(access_token=issued.access_token, expires_in=issued.expires_in)


@users_router.get("/me", response_model=MeOut, responses=error_responses(401))
async def read_me(request: Request, user_id: CurrentUserId, cache: CacheDep) -> Response:
    """The caller's own profile."""
    db = _shards(request).for_id(user_id)
    return private_response(await users_service.cached_me(db=db, cache=cache, user_id=user_id))


@users_router.patch("/me", responses=error_responses(401, 409, 413, 422))
async def update_me(
    body: MeUpdate, user_id: CurrentUserId, cache: CacheDep, request: Request
) -> MeOut:
    """Change the caller's username, email, password, bio or image."""
    user = await sharded_users.update_me(
        shards=_shards(request),
        cache=cache,
        passwords=request.app.state.passwords,
        user_id=user_id,
        changes=body.model_dump(exclude_unset=True, mode="json"),
    )
    return MeOut.model_validate(user, from_attributes=True)


@users_router.get("/{user_id}", response_model=UserOut, responses=error_responses(404, 422))
async def read_user(request: Request, user_id: UserIdPath, cache: CacheDep) -> Response:
    """A user's public profile (cached, with an ETag)."""
    db = _shards(request).for_id(user_id)
    entry = await users_service.cached_profile(db=db, cache=cache, user_id=user_id)
    return cached_response(request.headers, entry)


@posts_router.get("", include_in_schema=False, response_model=PostPage)
@posts_router.get("/", response_model=PostPage, responses=error_responses(401, 403, 422))
async def list_posts(
    request: Request,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    params: Annotated[PostListParams, Query()],
) -> Response:
    """Posts, newest first; keyset-paginated by `next_cursor` (across authors, no offset in
    sharded mode)."""
    shards = _shards(request)
    author_id = posts_routes.check_drafts_access(params.status, params.author_id, viewer_id)
    page = params.to_page()
    if author_id is not None:
        # One author: one database, the unsharded route's own path.
        return await posts_routes.posts_page_response(
            request,
            db=shards.for_id(author_id),
            cache=cache,
            viewer_id=viewer_id,
            page=page,
            author_id=author_id,
            tag=params.tag,
            status=params.status,
        )
    first = page.cursor is None and not page.offset
    if first and viewer_id is None:
        entry = await sharded_posts.cached_newest(
            shards=shards, cache=cache, limit=page.limit, tag=params.tag
        )
        return cached_response(request.headers, entry)
    body = await sharded_posts.list_newest(
        shards=shards, viewer_id=viewer_id, page=page, tag=params.tag
    )
    if first:
        return private_response(dump_json(body))
    return json_response(body)


@users_router.get("/{user_id}/posts", response_model=PostPage, responses=error_responses(401, 422))
async def list_user_posts(
    request: Request,
    user_id: UserIdPath,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    params: PageQuery,
) -> Response:
    """A user's published posts, newest first."""
    return await posts_routes.posts_page_response(
        request,
        db=_shards(request).for_id(user_id),
        cache=cache,
        viewer_id=viewer_id,
        page=params.to_page(),
        author_id=user_id,
    )


@posts_router.post("", include_in_schema=False, response_model=PostOut, status_code=201)
@posts_router.post(
    "/", response_model=PostOut, status_code=201, responses=error_responses(401, 413, 422)
)
async def create_post(
    request: Request, body: PostCreate, user_id: CurrentUserId, cache: CacheDep
) -> Response:
    """Publish a post (or save a draft) as the caller, on the caller's shard."""
    created = await sharded_posts.create_post(
        shards=_shards(request),
        cache=cache,
        author_id=user_id,
        title=body.title,
        content=body.content,
        status=body.status,
        description=body.description,
        tags=body.tags,
    )
    return json_response(created, status.HTTP_201_CREATED)


@posts_router.get("/popular", response_model=list[PostOut], responses=error_responses(401, 422))
async def popular_posts(
    request: Request,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    limit: posts_routes.SmallLimit = 20,
) -> Response:
    """The most liked published posts, merged from every shard's most liked."""
    shards = _shards(request)
    if viewer_id is None:
        entry = await sharded_posts.cached_popular(shards=shards, cache=cache, limit=limit)
        return cached_response(request.headers, entry)
    items = await sharded_posts.list_popular(shards=shards, viewer_id=viewer_id, limit=limit)
    return private_response(dump_json(items))


@posts_router.get("/search", response_model=list[PostOut], responses=error_responses(401, 422))
async def search_posts(
    request: Request,
    viewer_id: OptionalUserId,
    q: Annotated[SafeText, Query(min_length=1, max_length=200, description="Words to look for")],
    limit: posts_routes.SmallLimit = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """Full-text search in titles and contents, best match first, over every shard."""
    return json_response(
        await sharded_posts.search_posts(
            shards=_shards(request), viewer_id=viewer_id, q=q, limit=limit, offset=offset
        )
    )


@posts_router.get("/{post_id}", response_model=PostOut, responses=error_responses(401, 404, 422))
async def read_post(
    request: Request, post_id: PostIdPath, cache: CacheDep, viewer_id: OptionalUserId
) -> Response:
    """One post with its author, from the post's shard."""
    db = _shards(request).for_id(post_id)
    if viewer_id is None:
        entry = await posts_service.cached_post(db=db, cache=cache, post_id=post_id)
        return cached_response(request.headers, entry)
    return private_response(
        await posts_service.post_for_viewer(
            db=db, cache=cache, viewer_id=viewer_id, post_id=post_id
        )
    )


@posts_router.patch(
    "/{post_id}", response_model=PostOut, responses=error_responses(401, 403, 404, 412, 413, 422)
)
async def update_post(
    request: Request,
    post_id: PostIdPath,
    body: PostUpdate,
    user_id: CurrentUserId,
    cache: CacheDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Change a post (its author only), on the post's shard."""
    async with _shards(request).writing_for(post_id) as db:
        return await posts_routes.updated_post_response(
            db=db, cache=cache, user_id=user_id, post_id=post_id, body=body, if_match=if_match
        )


@posts_router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_post(
    request: Request, post_id: PostIdPath, user_id: CurrentUserId, cache: CacheDep
) -> None:
    """Delete a post (its author only), with its likes and tags."""
    async with _shards(request).writing_for(post_id) as db:
        await posts_service.delete_post(
            db=db, cache=cache, user_id=user_id, post=PostRef.by_id(post_id)
        )


@posts_router.post(
    "/{post_id}/like", response_model=LikeOut, responses=error_responses(401, 404, 422)
)
async def like_post(
    request: Request, post_id: PostIdPath, user_id: CurrentUserId, cache: CacheDep
) -> Response:
    """Like a post. Idempotent."""
    return json_response(
        await sharded_posts.set_like(
            shards=_shards(request), cache=cache, user_id=user_id, post_id=post_id, liked=True
        )
    )


@posts_router.delete(
    "/{post_id}/like", response_model=LikeOut, responses=error_responses(401, 404, 422)
)
async def unlike_post(
    request: Request, post_id: PostIdPath, user_id: CurrentUserId, cache: CacheDep
) -> Response:
    """Take back a like. Idempotent."""
    return json_response(
        await sharded_posts.set_like(
            shards=_shards(request), cache=cache, user_id=user_id, post_id=post_id, liked=False
        )
    )


@posts_router.get(
    "/{post_id}/comments", response_model=CommentPage, responses=error_responses(401, 404, 422)
)
async def list_comments(
    request: Request, post_id: PostIdPath, viewer_id: OptionalUserId, params: PageQuery
) -> Response:
    """A post's comments, oldest first, with their authors; keyset-paginated."""
    return json_response(
        await sharded_comments.list_comments_page(
            shards=_shards(request), post_id=post_id, viewer_id=viewer_id, page=params.to_page()
        )
    )


@posts_router.post(
    "/{post_id}/comments",
    response_model=CommentOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 404, 413, 422),
)
async def add_comment(
    request: Request,
    post_id: PostIdPath,
    body: CommentCreate,
    user_id: CurrentUserId,
    cache: CacheDep,
) -> Any:
    """Comment on a post as the caller."""
    return await sharded_comments.add_comment(
        shards=_shards(request), cache=cache, post_id=post_id, author_id=user_id, body=body.body
    )


@posts_router.delete(
    "/{post_id}/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_comment(
    request: Request,
    post_id: PostIdPath,
    comment_id: comments_routes.CommentIdPath,
    user_id: CurrentUserId,
) -> None:
    """Delete a comment (its author only)."""
    await sharded_comments.delete_comment(
        shards=_shards(request), post_id=post_id, comment_id=comment_id, user_id=user_id
    )


@users_router.post(
    "/{user_id}/follow", response_model=FollowOut, responses=error_responses(401, 404, 422, 503)
)
async def follow(
    request: Request, user_id: UserIdPath, me: CurrentUserId, cache: CacheDep
) -> Response:
    """Follow a user. Idempotent: after a 503, a retry completes the follow."""
    await sharded_social.set_follow(
        shards=_shards(request), cache=cache, follower_id=me, followee_id=user_id, following=True
    )
    return json_response({"user_id": user_id, "following": True})


@users_router.delete(
    "/{user_id}/follow", response_model=FollowOut, responses=error_responses(401, 404, 422, 503)
)
async def unfollow(
    request: Request, user_id: UserIdPath, me: CurrentUserId, cache: CacheDep
) -> Response:
    """Stop following a user. Idempotent."""
    await sharded_social.set_follow(
        shards=_shards(request), cache=cache, follower_id=me, followee_id=user_id, following=False
    )
    return json_response({"user_id": user_id, "following": False})


@users_router.get(
    "/{user_id}/followers", response_model=UserPage, responses=error_responses(404, 422)
)
async def followers(request: Request, user_id: UserIdPath, params: PageQuery) -> Response:
    """Who follows this user, most recent first."""
    return json_response(
        await sharded_social.list_follows(
            shards=_shards(request), user_id=user_id, page=params.to_page(), direction="followers"
        )
    )


@users_router.get(
    "/{user_id}/following", response_model=UserPage, responses=error_responses(404, 422)
)
async def following(request: Request, user_id: UserIdPath, params: PageQuery) -> Response:
    """Whom this user follows, most recent first."""
    return json_response(
        await sharded_social.list_follows(
            shards=_shards(request), user_id=user_id, page=params.to_page(), direction="following"
        )
    )


@users_router.get(
    "/{user_id}/friends", response_model=UserPage, responses=error_responses(404, 422)
)
async def friends(request: Request, user_id: UserIdPath, params: PageQuery) -> Response:
    """Mutual follows: users this user follows who follow them back."""
    return json_response(
        await sharded_social.list_follows(
            shards=_shards(request), user_id=user_id, page=params.to_page(), direction="friends"
        )
    )


@users_router.get(
    "/{user_id}/overview", response_model=OverviewOut, responses=error_responses(401, 404, 422)
)
async def overview(
    request: Request, user_id: UserIdPath, cache: CacheDep, viewer_id: OptionalUserId
) -> Response:
    """The user, their latest posts and their friends, in one response."""
    shards = _shards(request)
    if viewer_id is None:
        entry = await sharded_social.cached_overview(shards=shards, cache=cache, user_id=user_id)
        return cached_response(request.headers, entry)
    result = await sharded_social.overview(shards=shards, user_id=user_id, viewer_id=viewer_id)
    return private_response(dump_json(result))


@feed_router.get("", response_model=PostPage, responses=error_responses(401, 422))
async def feed(request: Request, me: CurrentUserId, params: PageQuery) -> Response:
    """Posts of the users the caller follows, newest first, merged from their shards."""
    return json_response(
        await sharded_social.feed(shards=_shards(request), user_id=me, page=params.to_page())
    )


tags_router = PrefixRouter(prefix="/tags", tags=["posts"])


@tags_router.get("", include_in_schema=False, response_model=list[str])
@tags_router.get("/", response_model=list[str])
async def list_tags(request: Request, cache: CacheDep) -> Response:
    """Tags on published posts, the most used first (ties by name), summed over shards."""
    entry = await sharded_posts.cached_tags(shards=_shards(request), cache=cache)
    return cached_response(request.headers, entry)


SHARDED_ROUTERS: tuple[APIRouter, ...] = (
    posts_router,
    users_router,
    feed_router,
    tags_router,
    auth_router,
)


def _operations(routers: Iterable[APIRouter]) -> set[tuple[str, str]]:
    return {
        (route.path, method)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }


def _refusal(operation: str) -> Any:
    async def not_yet() -> None:
        raise NotShardedYet(
            f"{operation} is not available in sharded mode yet", code="not_sharded_yet"
        )

    return not_yet


def refuse_unported(app: FastAPI, unsharded: Iterable[APIRouter]) -> list[tuple[str, str]]:
    """Answer 501 on every operation of the unsharded routers that sharded mode lacks;
    return them. Added before the sharded routes: a path of theirs shadows none of these
    (Starlette tries every route for one that matches the method too)."""
    ported = _operations(SHARDED_ROUTERS)
    refused: list[tuple[str, str]] = []
    for path, method in sorted(_operations(unsharded) - ported):
        app.add_api_route(
            path,
            _refusal(f"{method} {path}"),
            methods=[method],
            include_in_schema=False,
        )
        refused.append((path, method))
    return refused


def include_sharded_routes(app: FastAPI, unsharded: Iterable[APIRouter]) -> None:
    """Mount sharded mode's routes, and the 501 of those it has not yet."""
    app.state.account_check = refuse_gone_account
    refuse_unported(app, unsharded)
    for router in SHARDED_ROUTERS:
        app.include_router(router)
    # The hot routes without FastAPI's request handling, as unsharded (fastpost.routing),
    # in the unsharded order: the static /posts/... paths before /posts/{post_id}.
    add_lean_routes(
        app,
        read_post,
        list_posts,
        create_post,
        popular_posts,
        search_posts,
        list_user_posts,
        list_tags,
        like_post,
        unlike_post,
        list_comments,
        read_me,
        read_user,
        feed,
        overview,
        followers,
        following,
        friends,
        follow,
        unfollow,
    )
