"""The RealWorld API in sharded mode: fastpost.realworld's routes, shapes and errors over the
sharded services, as the adapter sits on the native services unsharded.

Where a request is about one post or one user, it goes to that database and calls the
unsharded RealWorld service with it (an article, its update, its deletion); where it spans
databases it calls the sharded services (fastpost.shards.posts, social, users, comments), or
runs the read model's unsharded statement on each database and merges (the article list,
the feed).

An article by slug: the slug's random suffix carries the post's logical shard
(posts.slugs.make_sharded_slug), so `GET /api/articles/{slug}` is the unsharded article
statement on the one database that holds it: one statement, as unsharded
(tests/shards/test_realworld.py counts it). A slug directory on the directory database
would put a second round trip (the directory, then the post's database) in front of the
API's hottest read, and a directory write beside every new article, with a way for the two
to disagree. The logical shard rather than the database: a move changes the shard map, not
the slugs. The id itself would not fit: the slug is written in the INSERT that numbers it.
Writes by slug (update, delete) go through the gate of sharded writes (Shards.writing).

Not cached per viewer as unsharded: a logged-in caller's first page of the list is read
afresh (unsharded splices their flags into the shared entry; here that would be one more
statement per database, against the page's one).

Lists with `articlesCount`: offset paging is part of the API, so each database concerned
returns its first offset + limit rows (offset <= pagination.MAX_OFFSET), merged newest
first and cut; the count is the sum of each database's count, read by the unsharded
statement's shape (the total in each row, or the count alone on a database with no row).
An author's list is one database (the directory names it); a favoriting user's is every
database (likes live with the posts), filtered by their id from the directory, since their
users row is on their database only. Timestamps are read as datetimes, not the text
PostgreSQL can write (queries.PostRead.iso_timestamps), to merge at full precision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cache
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Request, Response, status
from sqlalchemy import BigInteger, Select, bindparam, select

from fastpost.bound_lists import one_of
from fastpost.cache import Cache, CacheDep, Entry
from fastpost.comments.service import MAX_COMMENTS
from fastpost.db import Database, Row
from fastpost.errors import NotFound
from fastpost.http_caching import cached_response, private_response
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.posts.models import PostStatus
from fastpost.posts.queries import PostRead, PostRef, follows, users
from fastpost.posts.slugs import logical_shard_of_slug
from fastpost.query import openapi_parameters, parse_query, query_model
from fastpost.rate_limits import limit_login, limit_registration
from fastpost.realworld import service
from fastpost.realworld.router import (
    PREFIX,
    Caller,
    CurrentCaller,
    OptionalCaller,
    Slug,
    Username,
    article_response,
    checked_login,
    is_home_page,
    me_response,
    new_post,
    resolve_caller,
    updated_article,
    user_changes,
    user_out,
    viewer_id_of,
    with_new_token,
)
from fastpost.realworld.schemas import (
    ArticleEnvelope,
    ArticleListParams,
    ArticlesEnvelope,
    CommentEnvelope,
    CommentsEnvelope,
    FeedParams,
    LoginUserIn,
    NewArticleIn,
    NewCommentIn,
    NewUserIn,
    ProfileEnvelope,
    TagsEnvelope,
    UpdateArticleIn,
    UpdateUserIn,
    UserEnvelope,
    realworld_errors,
)
from fastpost.responses import dump_json, json_response
from fastpost.routing import PrefixRouter, add_lean_routes
from fastpost.shards import comments as sharded_comments
from fastpost.shards import posts as sharded_posts
from fastpost.shards import social as sharded_social
from fastpost.shards import users as sharded_users
from fastpost.shards.merge import fetch_each, merge_sorted
from fastpost.shards.router import Shards
from fastpost.social import service as social_service
from fastpost.users.router import passwords_of

T = TypeVar("T")


def _shards(request: Request) -> Shards:
    shards: Shards = request.app.state.shards
    return shards


def _logical_shard(slug: str) -> int:
    logical = logical_shard_of_slug(slug)
    if logical is None:
        raise NotFound("not found", code="article_not_found", field="article")
    return logical


def database_of_slug(shards: Shards, slug: str) -> Database:
    """The database of the article with this slug; 404 for a slug no article can have."""
    return shards.for_logical(_logical_shard(slug))


def writing_slug(shards: Shards, slug: str) -> AbstractAsyncContextManager[Database]:
    """The database to change the article with this slug on, through the gate of sharded
    writes (router.Shards.writing: it waits while the article's shard is being moved)."""
    return shards.writing(_logical_shard(slug))


async def _each(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await the calls at once; the first failure is raised once all have ended (none keeps
    a connection past the response), as merge.fetch_each does."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


# Articles: lists


@cache
def _list_read(viewer: bool) -> PostRead:
    return PostRead(viewer=viewer, following=viewer, content=False, status=False, author_bio=True)


@cache
def _list_statements(
    viewer: bool, tag: bool, author: bool, favorited: bool, offset: bool
) -> tuple[Select[Any], Select[Any]]:
    """The unsharded adapter's page (with its total) and total alone (realworld.service),
    the favoriting user named by id."""
    liked_by: queries.LikedByFilter = "id" if favorited else False
    return service.list_statements(
        _list_read(viewer), tag=tag, author=author, liked_by=liked_by, offset=offset
    )


async def _merged_page(
    shards: Shards,
    databases: Sequence[Database],
    statements: tuple[Select[Any], Select[Any]],
    params: dict[str, Any],
    *,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """The page at offset of the rows of every database, newest first, and their total.

    The total is the sum of each database's: from a move's copy to its delete it counts the
    moving shard's rows twice (the rows themselves are taken from one database)."""
    page, count = statements
    if len(databases) == 1:
        rows, total = await service.rows_and_total(
            databases[0], page, count, {**params, "limit": limit, "offset": offset}
        )
        return list(rows), total
    first = {**params, "limit": offset + limit, "offset": 0}
    results = await _each([service.rows_and_total(db, page, count, first) for db in databases])
    pages = [shards.owned(db, rows) for db, (rows, _) in zip(databases, results, strict=True)]
    rows = merge_sorted(pages, offset + limit)[offset:]
    return rows, sum(total for _, total in results)


async def article_rows(
    *,
    shards: Shards,
    viewer_id: int | None,
    limit: int,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    offset: int = 0,
) -> tuple[list[Row], int]:
    """A page of published articles, newest first, and how many match in all."""
    databases: Sequence[Database] = shards.each()
    liker_id = None
    if author is not None:
        author_db = await sharded_users.user_database(shards, author)
        if author_db is None:
            return [], 0
        databases = [author_db]
    if favorited is not None:
        liker_id = await sharded_users.user_id_named(shards, favorited)
        if liker_id is None:
            return [], 0
    multi = len(databases) > 1
    statements = _list_statements(
        viewer_id is not None,
        tag is not None,
        author is not None,
        favorited is not None,
        offset > 0 and not multi,
    )
    params = {
        "viewer_id": viewer_id,
        "status": PostStatus.published.value,
        "tag": tag,
        "author": author,
        "liked_by_id": liker_id,
    }
    return await _merged_page(shards, databases, statements, params, limit=limit, offset=offset)


async def list_articles(
    *,
    shards: Shards,
    viewer_id: int | None,
    tag: str | None,
    author: str | None,
    favorited: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Return a page of published articles of every database and how many match in all."""
    rows, total = await article_rows(
        shards=shards,
        viewer_id=viewer_id,
        tag=tag,
        author=author,
        favorited=favorited,
        limit=limit,
        offset=offset,
    )
    return service.articles_page(rows, total)


async def cached_first_articles(*, shards: Shards, cache: Cache, limit: int) -> Entry:
    """The newest published articles, unfiltered, as an anonymous caller sees them, under
    the unsharded key and tags (the same writes drop it)."""

    async def read_page() -> tuple[Sequence[Row], int]:
        return await article_rows(shards=shards, viewer_id=None, limit=limit)

    return await service.cached_first_page(cache, limit, read_page)


async def feed(*, shards: Shards, viewer_id: int, limit: int, offset: int) -> dict[str, Any]:
    """Articles by the authors the caller follows, newest first, and how many in all.

    The unsharded feed statement runs on every database as it is: a follow is stored on the
    followee's database too (fastpost.shards.social), so each database's follow rows of the
    caller name every followed author whose posts it holds, and its counters only count
    those posts."""
    databases = shards.each()
    shape = (False, offset > 0 and len(databases) == 1)
    statements = (
        queries.feed_statement(shards.directory.dialect, _list_read(True), shape, total=True),
        queries.feed_count_statement(),
    )
    rows, total = await _merged_page(
        shards, databases, statements, {"viewer_id": viewer_id}, limit=limit, offset=offset
    )
    return service.articles_page(rows, total)


async def cached_tags(*, shards: Shards, cache: Cache) -> Entry:
    """The tags in use on every database, in the API's envelope, under the unsharded key."""
    return await service.cached_tags_of(cache, lambda: sharded_posts.list_tags(shards=shards))


# Articles: one by slug


async def _visible_post(shards: Shards, slug: str, viewer_id: int) -> tuple[Database, int]:
    """The database of the article with this slug and its id, if the caller may see it."""
    db = database_of_slug(shards, slug)
    post_id = await posts_service.visible_post_id(
        db=db, viewer_id=viewer_id, post=PostRef.by_slug(slug)
    )
    return db, post_id


async def favorite(
    *, shards: Shards, cache: Cache, user_id: int, slug: str, favorite: bool
) -> dict[str, Any]:
    """Favorite (or not) an article, on its database (the sharded like: the caller's
    account is on theirs), and return it as the caller now sees it."""
    db, post_id = await _visible_post(shards, slug, user_id)
    await sharded_posts.set_like(
        shards=shards, cache=cache, user_id=user_id, post_id=post_id, liked=favorite
    )
    return await service.get_article(db=db, viewer_id=user_id, slug=slug)


async def _me(shards: Shards, cache: Cache, user_id: int) -> dict[str, Any]:
    """The caller's profile: the entry the request's account check has just read."""
    return await service.cached_user(db=shards.for_id(user_id), cache=cache, user_id=user_id)


def _comment_by(row: Row, author: Row, following: bool) -> dict[str, Any]:
    """A comment row of the post's database with its author's profile (from theirs)."""
    return service.comment_dict(
        {
            **row,
            "author_username": author["username"],
            "author_bio": author["bio"],
            "author_image": author["image"],
            "following": following,
        }
    )


# Comments: on the post's database; their authors' names and bios from theirs, and whether
# the caller follows each from the caller's (one statement per database concerned).
_AUTHORS = select(users.c.id, users.c.username, users.c.bio, users.c.image).where(
    one_of(users.c.id, "user_ids", dialect="postgresql", item_type=BigInteger())
)
_FOLLOWED = select(follows.c.followee_id).where(
    follows.c.follower_id == bindparam("viewer_id", type_=BigInteger),
    one_of(follows.c.followee_id, "user_ids", dialect="postgresql", item_type=BigInteger()),
)


async def list_comments(
    *, shards: Shards, slug: str, viewer_id: int | None
) -> list[dict[str, Any]]:
    """An article's comments, oldest first (up to MAX_COMMENTS, as unsharded)."""
    db = database_of_slug(shards, slug)
    post_id = await service.published_post_id(db=db, slug=slug)
    rows = await db.fetch_all(
        sharded_comments.page_statement(False, False), {"post_id": post_id, "limit": MAX_COMMENTS}
    )
    author_ids = sorted({row["author_id"] for row in rows})
    groups = shards.group_by_database(author_ids)
    lookups: list[Awaitable[list[Sequence[Row]]]] = [
        fetch_each(
            [shards.databases[n] for n in groups],
            _AUTHORS,
            [{"user_ids": ids} for ids in groups.values()],
        )
    ]
    if viewer_id is not None and author_ids:
        viewer_db = shards.for_id(viewer_id)
        lookups.append(
            fetch_each([viewer_db], _FOLLOWED, {"viewer_id": viewer_id, "user_ids": author_ids})
        )
    found = await _each(lookups)
    authors = {row["id"]: row for rows_of_db in found[0] for row in rows_of_db}
    followed = {row["followee_id"] for row in found[1][0]} if len(found) > 1 else set()
    shown = []
    for row in rows:
        author = authors.get(row["author_id"])
        if author is None:  # deleted since: their comments outlive them on other databases
            continue
        shown.append(_comment_by(row, author, row["author_id"] in followed))
    return shown


async def add_comment(
    *, shards: Shards, cache: Cache, slug: str, user_id: int, body: str
) -> dict[str, Any]:
    """Comment on the article as the caller (the sharded comment, on the post's database)."""
    _, post_id = await _visible_post(shards, slug, user_id)
    comment = await sharded_comments.add_comment(
        shards=shards, cache=cache, post_id=post_id, author_id=user_id, body=body
    )
    return _comment_by(comment, await _me(shards, cache, user_id), False)


async def delete_comment(*, shards: Shards, slug: str, comment_id: int, user_id: int) -> None:
    """Delete the caller's comment on the article."""
    _, post_id = await _visible_post(shards, slug, user_id)
    await sharded_comments.delete_comment(
        shards=shards, post_id=post_id, comment_id=comment_id, user_id=user_id
    )


# Profiles: the directory names the user's database, which holds the follow rows naming
# them as followee (the `following` flag).


async def _user_db(shards: Shards, username: str) -> Database:
    db = await sharded_users.user_database(shards, username)
    if db is None:
        raise NotFound("User not found", code="user_not_found")
    return db


async def get_profile(*, shards: Shards, viewer_id: int | None, username: str) -> dict[str, Any]:
    """Return a user's profile and whether the caller follows them."""
    db = await _user_db(shards, username)
    return await service.get_profile(db=db, viewer_id=viewer_id, username=username)


async def change_follow(
    *, shards: Shards, cache: Cache, viewer_id: int, username: str, follow: bool
) -> dict[str, Any]:
    """Follow (or stop following) a user by name (the sharded follow: both users'
    databases); return their profile as the caller now sees it."""
    db = await _user_db(shards, username)
    target = await social_service.profile_by_username(db=db, viewer_id=None, username=username)
    await sharded_social.set_follow(
        shards=shards,
        cache=cache,
        follower_id=viewer_id,
        followee_id=int(target["id"]),
        following=follow,
    )
    return service.profile_dict({**target, "following": follow})


# Routes: those of fastpost.realworld.router, each with the sharded call in place of the
# unsharded one; same paths, envelopes, status codes and errors.

router = PrefixRouter(prefix=PREFIX, tags=["realworld"])


@router.get(
    "/articles",
    response_model=ArticlesEnvelope,
    responses=realworld_errors(401, 422),
    openapi_extra={**openapi_parameters(ArticleListParams), "security": [{"Token": []}, {}]},
)
async def list_articles_route(request: Request) -> Response:
    """Published articles, newest first, filtered by tag, author or favoriting user."""
    caller = await resolve_caller(request, required=False)
    query = parse_query(ArticleListParams, request)
    shards = _shards(request)
    first_page = is_home_page(query)
    if first_page and caller is None:
        # A front end's home page: cached, revalidated by ETag, as unsharded. A logged-in
        # caller's is read afresh (unsharded splices their flags into the shared entry).
        entry = await cached_first_articles(
            shards=shards, cache=request.app.state.cache, limit=query.limit
        )
        return cached_response(request.headers, entry)
    body = await list_articles(
        shards=shards,
        viewer_id=viewer_id_of(caller),
        tag=query.tag,
        author=query.author,
        favorited=query.favorited,
        limit=query.limit,
        offset=query.offset,
    )
    return private_response(dump_json(body)) if first_page else json_response(body)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserEnvelope,
    responses=realworld_errors(409, 422, 429),
)
async def register(body: NewUserIn, request: Request) -> Response:
    """Register a new user, on their shard."""
    await limit_registration(request)
    user = await sharded_users.register_user(
        shards=_shards(request),
        passwords=passwords_of(request),
        username=body.user.username,
        email=str(body.user.email),
        password=body.user.password,
    )
    return with_new_token(request, user, user["id"], 201)


@router.post("/users/login", response_model=UserEnvelope, responses=realworld_errors(401, 422, 429))
async def login(body: LoginUserIn, request: Request) -> Response:
    """Log in with email and password."""
    await limit_login(request, str(body.user.email))
    shards = _shards(request)
    cache: Cache = request.app.state.cache
    user_id = await checked_login(
        sharded_users.authenticate_by_email(
            shards=shards,
            passwords=passwords_of(request),
            email=body.user.email,
            password=body.user.password,
            cache=cache,
        )
    )
    return with_new_token(request, await _me(shards, cache, user_id), user_id)


@router.get("/user", response_model=UserEnvelope, responses=realworld_errors(401))
async def current_user(caller: CurrentCaller, request: Request) -> Response:
    """The logged-in user."""
    return await me_response(_shards(request).for_id(caller.user_id), caller)


@router.put("/user", response_model=UserEnvelope, responses=realworld_errors(401, 409, 422))
async def update_user(
    body: UpdateUserIn, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Update the logged-in user; a null or empty bio or image clears it."""
    changes = user_changes(body.user)
    shards = _shards(request)
    if not changes:
        return await me_response(shards.for_id(caller.user_id), caller)
    user = await sharded_users.update_me(
        shards=shards,
        cache=cache,
        passwords=passwords_of(request),
        user_id=caller.user_id,
        changes=changes,
    )
    return json_response(user_out(user, caller.token))


@router.get(
    "/profiles/{username}",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def profile(username: Username, caller: OptionalCaller, request: Request) -> Response:
    """A user's profile."""
    found = await get_profile(
        shards=_shards(request), viewer_id=viewer_id_of(caller), username=username
    )
    return json_response({"profile": found})


async def _follow_route(
    request: Request, cache: Cache, caller: Caller, username: str, *, follow: bool
) -> Response:
    """Follow or unfollow, in the profile envelope."""
    found = await change_follow(
        shards=_shards(request),
        cache=cache,
        viewer_id=caller.user_id,
        username=username,
        follow=follow,
    )
    return json_response({"profile": found})


@router.post(
    "/profiles/{username}/follow",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def follow(
    username: Username, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Follow a user."""
    return await _follow_route(request, cache, caller, username, follow=True)


@router.delete(
    "/profiles/{username}/follow",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def unfollow(
    username: Username, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Stop following a user."""
    return await _follow_route(request, cache, caller, username, follow=False)


@router.get(
    "/articles/feed",
    response_model=ArticlesEnvelope,
    responses=realworld_errors(401, 422),
    openapi_extra=openapi_parameters(FeedParams),
)
async def feed_route(
    caller: CurrentCaller,
    request: Request,
    query: Annotated[FeedParams, Depends(query_model(FeedParams))],
) -> Response:
    """Articles by the authors the caller follows, newest first."""
    return json_response(
        await feed(
            shards=_shards(request),
            viewer_id=caller.user_id,
            limit=query.limit,
            offset=query.offset,
        )
    )


@router.post(
    "/articles",
    status_code=status.HTTP_201_CREATED,
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 422),
)
async def create_article(
    body: NewArticleIn, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Publish an article, on its author's shard."""
    shards = _shards(request)
    created = await sharded_posts.create_post(
        shards=shards, cache=cache, author_id=caller.user_id, **new_post(body.article)
    )
    me = await _me(shards, cache, caller.user_id)
    return json_response({"article": service.new_article(created, me["bio"])}, 201)


@router.get(
    "/articles/{slug}",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
    openapi_extra={"security": [{"Token": []}, {}]},
)
async def get_article(slug: Slug, request: Request) -> Response:
    """One article, with its body, from the database its slug names."""
    caller = await resolve_caller(request, required=False)
    return await article_response(request, database_of_slug(_shards(request), slug), caller, slug)


@router.put(
    "/articles/{slug}",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 403, 404, 422),
)
async def update_article(
    slug: Slug, body: UpdateArticleIn, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Change an article (its author only, who lives on the article's database)."""
    async with writing_slug(_shards(request), slug) as db:
        result = await updated_article(
            db=db, cache=cache, caller=caller, slug=slug, article=body.article
        )
    return json_response(result)


@router.delete(
    "/articles/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=realworld_errors(401, 403, 404, 422),
)
async def delete_article(
    slug: Slug, caller: CurrentCaller, cache: CacheDep, request: Request
) -> None:
    """Delete an article (its author only), with its comments, tags and favorites."""
    async with writing_slug(_shards(request), slug) as db:
        await service.delete_article(db=db, cache=cache, user_id=caller.user_id, slug=slug)


async def _favorite_route(
    request: Request, cache: Cache, caller: Caller, slug: str, *, favorited: bool
) -> Response:
    """Favorite or unfavorite, in the article envelope."""
    article = await favorite(
        shards=_shards(request), cache=cache, user_id=caller.user_id, slug=slug, favorite=favorited
    )
    return json_response({"article": article})


@router.post(
    "/articles/{slug}/favorite",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def favorite_route(
    slug: Slug, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Favorite an article."""
    return await _favorite_route(request, cache, caller, slug, favorited=True)


@router.delete(
    "/articles/{slug}/favorite",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def unfavorite_route(
    slug: Slug, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Take back a favorite."""
    return await _favorite_route(request, cache, caller, slug, favorited=False)


@router.get(
    "/articles/{slug}/comments",
    response_model=CommentsEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def list_comments_route(slug: Slug, caller: OptionalCaller, request: Request) -> Response:
    """An article's comments, oldest first."""
    shown = await list_comments(shards=_shards(request), slug=slug, viewer_id=viewer_id_of(caller))
    return json_response({"comments": shown})


@router.post(
    "/articles/{slug}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def add_comment_route(
    slug: Slug, body: NewCommentIn, caller: CurrentCaller, cache: CacheDep, request: Request
) -> Response:
    """Comment on an article."""
    comment = await add_comment(
        shards=_shards(request),
        cache=cache,
        slug=slug,
        user_id=caller.user_id,
        body=body.comment.body,
    )
    return json_response({"comment": comment}, 201)


@router.delete(
    "/articles/{slug}/comments/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=realworld_errors(401, 403, 404, 422),
)
async def delete_comment_route(
    slug: Slug,
    comment_id: Annotated[int, Path(alias="id", ge=1, le=2**53 - 1)],
    caller: CurrentCaller,
    request: Request,
) -> None:
    """Delete a comment (its author only)."""
    await delete_comment(
        shards=_shards(request), slug=slug, comment_id=comment_id, user_id=caller.user_id
    )


@router.get("/tags", response_model=TagsEnvelope)
async def list_tags_route(request: Request) -> Response:
    """Tags on published articles of every database, the most used first."""
    entry = await cached_tags(shards=_shards(request), cache=request.app.state.cache)
    return cached_response(request.headers, entry)


def include_realworld_routes(app: FastAPI) -> None:
    """Mount the sharded RealWorld routes; the hot reads without FastAPI's request handling,
    as unsharded (fastpost.routing.LeanRoute)."""
    app.include_router(router)
    add_lean_routes(app, list_articles_route, feed_route, current_user, list_tags_route)
