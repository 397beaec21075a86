"""HTTP routes of the RealWorld API, mounted at /api: parse, authorise, call the services,
shape the response in the API's envelopes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypedDict

from fastapi import Depends, Path, Request, Response, status
from fastapi.security import APIKeyHeader

from fastpost.cache import Cache, CacheDep
from fastpost.comments import service as comments_service
from fastpost.db import Database, DatabaseDep, WriteSession
from fastpost.errors import Unauthorized
from fastpost.http_caching import cached_response, private_response
from fastpost.observability.request_stats import set_current_user
from fastpost.posts import service as posts_service
from fastpost.posts.models import PostStatus
from fastpost.query import openapi_parameters, parse_query, query_model
from fastpost.rate_limits import limit_login, limit_registration
from fastpost.realworld import service
from fastpost.realworld.schemas import (
    ArticleEnvelope,
    ArticleListParams,
    ArticlesEnvelope,
    CommentEnvelope,
    CommentsEnvelope,
    FeedParams,
    LoginUserIn,
    NewArticle,
    NewArticleIn,
    NewCommentIn,
    NewUserIn,
    ProfileEnvelope,
    TagsEnvelope,
    UpdateArticle,
    UpdateArticleIn,
    UpdateUser,
    UpdateUserIn,
    UserEnvelope,
    realworld_errors,
)
from fastpost.responses import json_response
from fastpost.routing import PrefixRouter
from fastpost.schemas import SafeText
from fastpost.security import Tokens, token_in
from fastpost.users import service as users_service
from fastpost.users.router import passwords_of

PREFIX = "/api"
router = PrefixRouter(prefix=PREFIX, tags=["realworld"])


class Caller:
    """The caller from `Authorization: Token <jwt>` (the API's scheme; `Bearer` works too),
    with the token itself, which the user endpoints echo back."""

    def __init__(self, user_id: int, token: str) -> None:
        self.user_id = user_id
        self.token = token


# The API's own scheme, and fastpost's, which RealWorld clients built on it may send.
_SCHEMES = ("token", "bearer")


async def resolve_caller(request: Request, *, required: bool) -> Caller | None:
    token = token_in(request.headers.get("authorization", ""), _SCHEMES)
    if token is None:
        if required:
            raise Unauthorized("is missing", field="token")
        return None
    state = request.app.state
    tokens: Tokens = state.tokens
    try:
        user_id = tokens.user_id(token)
        # A deactivated or deleted account's token is refused like a bad one.
        await state.account_check(request, user_id)
    except Unauthorized as exc:
        raise Unauthorized("is invalid", code=exc.code, field="token") from None
    set_current_user(user_id)  # for the access log line
    return Caller(user_id, token)


class _TokenHeader(APIKeyHeader):
    """The caller, as one dependency; an APIKeyHeader so that OpenAPI shows the scheme."""

    def __init__(self, *, required: bool) -> None:
        super().__init__(
            name="Authorization",
            scheme_name="Token",
            description="`Token <jwt>` from /api/users or /api/users/login",
            auto_error=False,
        )
        self.required = required

    async def __call__(self, request: Request) -> Caller | None:  # type: ignore[override]
        return await resolve_caller(request, required=self.required)


CurrentCaller = Annotated[Caller, Depends(_TokenHeader(required=True))]
OptionalCaller = Annotated[Caller | None, Depends(_TokenHeader(required=False))]
# NUL refused (422) here rather than by PostgreSQL, which fails the statement (a 500).
Slug = Annotated[SafeText, Path(min_length=1, max_length=100)]
Username = Annotated[SafeText, Path(min_length=1, max_length=64)]


def viewer_id_of(caller: Caller | None) -> int | None:
    return caller.user_id if caller is not None else None


def user_out(user: Any, token: str) -> dict[str, Any]:
    def field(name: str) -> Any:
        return user[name] if isinstance(user, dict) else getattr(user, name)

    return {
        "user": {
            "email": field("email"),
            "token": token,
            "username": field("username"),
            "bio": field("bio"),
            "image": field("image"),
        }
    }


def with_new_token(request: Request, user: Any, user_id: int, status_code: int = 200) -> Response:
    """The user's envelope (user_out) with a token newly issued for them."""
    tokens: Tokens = request.app.state.tokens
    return json_response(user_out(user, tokens.issue(user_id).access_token), status_code)


async def checked_login(login: Awaitable[int]) -> int:
    """The user id a login returns; any refusal as the spec's one answer."""
    try:
        return await login
    except Unauthorized:
        # Whatever the reason (no such email, a wrong password, a closed account): the
        # spec's one answer, which tells an attacker nothing.
        raise Unauthorized("invalid", code="invalid_credentials", field="credentials") from None


async def me_response(db: Database, caller: Caller) -> Response:
    """The caller's account, read from their database, in the user envelope."""
    me = await users_service.get_me(db=db, user_id=caller.user_id)
    return json_response(user_out(dict(me), caller.token))


def user_changes(user: UpdateUser) -> dict[str, Any]:
    """The fields a user update sets; a null or empty bio or image clears it."""
    # A null email, username or password is a 422 (schemas.UpdateUser); bio and image
    # are nullable.
    changes = user.model_dump(exclude_unset=True, mode="json")
    for name in ("bio", "image"):
        if name in changes and not changes[name]:
            changes[name] = None
    return changes


def is_home_page(query: ArticleListParams) -> bool:
    """Whether the list asked for is the unfiltered first page: a front end's home page."""
    unfiltered = query.tag is None and query.author is None and query.favorited is None
    return query.offset == 0 and unfiltered


class NewPost(TypedDict):
    """A new article's fields under the names of the posts services' create_post."""

    title: str
    content: str
    description: str
    status: PostStatus
    tags: list[str] | tuple[str, ...]


def new_post(article: NewArticle) -> NewPost:
    """A new article's fields as create_post takes them, published."""
    return NewPost(
        title=article.title,
        content=article.body,
        description=article.description,
        status=PostStatus.published,
        tags=article.tagList or (),
    )


def article_changes(article: UpdateArticle) -> dict[str, Any]:
    """The columns an article update sets, by the posts' names (body is content)."""
    fields = article.model_dump(exclude_unset=True, exclude={"tagList"})
    return {
        {"body": "content"}.get(name, name): value
        for name, value in fields.items()
        if value is not None
    }


async def updated_article(
    *, db: Database, cache: Cache, caller: Caller, slug: str, article: UpdateArticle
) -> dict[str, Any]:
    """Apply an article update on its database; the article as its author now sees it, in
    its envelope."""
    result = await service.update_article(
        db=db,
        cache=cache,
        user_id=caller.user_id,
        slug=slug,
        changes=article_changes(article),
        tags=article.tagList,
    )
    return {"article": result}


async def article_response(
    request: Request, db: Database, caller: Caller | None, slug: str
) -> Response:
    """One article from its database: anonymously the cached entry (answered 304 on a
    matching ETag without touching the database), else with the caller's flags."""
    cache: Cache = request.app.state.cache
    if caller is None:
        entry = await service.cached_article(db=db, cache=cache, slug=slug)
        return cached_response(request.headers, entry)
    return private_response(
        await service.article_for_viewer(db=db, cache=cache, viewer_id=caller.user_id, slug=slug)
    )


# The home page of every RealWorld front end, and the list the peers race on.
# - Declared first: FastAPI (0.165) tries a router's routes in order, twice a request (to
#   match, then to handle).
# - It reads its caller and query string itself instead of through dependencies: FastAPI
#   solves each dependency with bookkeeping of its own per request, and the four this route
#   had cost a fifth of its CPU time with the cache off (in-process, process time: with
#   them back, `fastpost profile GET /api/articles` shows FastAPI's solve_dependencies
#   share; benchmarks/bench_realworld.py measures the route's CPU per request beside
#   asyncpg's).
#   OpenAPI shows the same parameters and security scheme.
@router.get(
    "/articles",
    response_model=ArticlesEnvelope,
    responses=realworld_errors(401, 422),
    openapi_extra={**openapi_parameters(ArticleListParams), "security": [{"Token": []}, {}]},
)
async def list_articles(request: Request) -> Response:
    """Published articles, newest first, filtered by tag, author or favoriting user."""
    # First: a bad token is a 401 before a 422.
    caller = await resolve_caller(request, required=False)
    query = parse_query(ArticleListParams, request)
    db: Database = request.app.state.db
    if is_home_page(query):
        # A front end's home page: served from the cache, revalidated by ETag; a logged-in
        # caller gets the same cached page with their flags spliced in.
        cache: Cache = request.app.state.cache
        if caller is not None:
            return private_response(
                await service.first_articles_for_viewer(
                    db=db, cache=cache, viewer_id=caller.user_id, limit=query.limit
                )
            )
        entry = await service.cached_first_articles(db=db, cache=cache, limit=query.limit)
        return cached_response(request.headers, entry)
    return json_response(
        await service.list_articles(
            db=db,
            viewer_id=viewer_id_of(caller),
            tag=query.tag,
            author=query.author,
            favorited=query.favorited,
            limit=query.limit,
            offset=query.offset,
        )
    )


# Users and authentication


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserEnvelope,
    responses=realworld_errors(409, 422, 429),
)
async def register(body: NewUserIn, session: WriteSession, request: Request) -> Response:
    """Register a new user."""
    await limit_registration(request)
    user = await users_service.register_user(
        session=session,
        passwords=passwords_of(request),
        username=body.user.username,
        email=str(body.user.email),
        password=body.user.password,
    )
    return with_new_token(request, user, user.id, 201)


@router.post(
    "/users/login",
    response_model=UserEnvelope,
    responses=realworld_errors(401, 422, 429),
)
async def login(body: LoginUserIn, db: DatabaseDep, request: Request) -> Response:
    """Log in with email and password."""
    await limit_login(request, str(body.user.email))
    # The users service's login: equal timing for unknown emails, bounded hashing,
    # out-of-date hashes upgraded.
    user_id = await checked_login(
        users_service.authenticate_by_email(
            db=db,
            passwords=passwords_of(request),
            email=body.user.email,
            password=body.user.password,
            cache=request.app.state.cache,
        )
    )
    # Cached by the login itself: no second read of the account.
    me = await service.cached_user(db=db, cache=request.app.state.cache, user_id=user_id)
    return with_new_token(request, me, user_id)


@router.get(
    "/user",
    response_model=UserEnvelope,
    responses=realworld_errors(401),
)
async def current_user(caller: CurrentCaller, db: DatabaseDep) -> Response:
    """The logged-in user."""
    return await me_response(db, caller)


@router.put(
    "/user",
    response_model=UserEnvelope,
    responses=realworld_errors(401, 409, 422),
)
async def update_user(
    body: UpdateUserIn,
    caller: CurrentCaller,
    session: WriteSession,
    cache: CacheDep,
    request: Request,
) -> Response:
    """Update the logged-in user; a null or empty bio or image clears it."""
    changes = user_changes(body.user)
    if not changes:
        return await me_response(request.app.state.db, caller)
    user = await users_service.update_me(
        session=session,
        cache=cache,
        passwords=passwords_of(request),
        user_id=caller.user_id,
        changes=changes,
    )
    return json_response(user_out(user, caller.token))


# Profiles


@router.get(
    "/profiles/{username}",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def get_profile(username: Username, caller: OptionalCaller, db: DatabaseDep) -> Response:
    """A user's profile."""
    profile = await service.get_profile(db=db, viewer_id=viewer_id_of(caller), username=username)
    return json_response({"profile": profile})


async def _change_follow(
    db: Database, cache: Cache, caller: Caller, username: str, *, follow: bool
) -> dict[str, Any]:
    profile = await service.change_follow(
        db=db, cache=cache, viewer_id=caller.user_id, username=username, follow=follow
    )
    return {"profile": profile}


@router.post(
    "/profiles/{username}/follow",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def follow(
    username: Username, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Follow a user."""
    return json_response(await _change_follow(db, cache, caller, username, follow=True))


@router.delete(
    "/profiles/{username}/follow",
    response_model=ProfileEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def unfollow(
    username: Username, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Stop following a user."""
    return json_response(await _change_follow(db, cache, caller, username, follow=False))


# Articles


@router.get(
    "/articles/feed",
    response_model=ArticlesEnvelope,
    responses=realworld_errors(401, 422),
    openapi_extra=openapi_parameters(FeedParams),
)
async def feed(
    caller: CurrentCaller,
    db: DatabaseDep,
    query: Annotated[FeedParams, Depends(query_model(FeedParams))],
) -> Response:
    """Articles by the authors the caller follows, newest first."""
    return json_response(
        await service.feed(db=db, viewer_id=caller.user_id, limit=query.limit, offset=query.offset)
    )


@router.post(
    "/articles",
    status_code=status.HTTP_201_CREATED,
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 422),
)
async def create_article(
    body: NewArticleIn, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Publish an article."""
    created, bio = await posts_service.create_post(
        db=db, cache=cache, author_id=caller.user_id, **new_post(body.article)
    )
    return json_response({"article": service.new_article(created, bio)}, 201)


# Reads its caller itself, as list_articles does, and for the same reason.
@router.get(
    "/articles/{slug}",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
    openapi_extra={"security": [{"Token": []}, {}]},
)
async def get_article(slug: Slug, request: Request) -> Response:
    """One article, with its body. Served from the cache, anonymously with an ETag: a
    conditional request is answered 304 without touching the database."""
    caller = await resolve_caller(request, required=False)
    return await article_response(request, request.app.state.db, caller, slug)


@router.put(
    "/articles/{slug}",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 403, 404, 422),
)
async def update_article(
    slug: Slug,
    body: UpdateArticleIn,
    caller: CurrentCaller,
    db: DatabaseDep,
    cache: CacheDep,
) -> Response:
    """Change an article (its author only). The slug stays, so links keep working."""
    return json_response(
        await updated_article(db=db, cache=cache, caller=caller, slug=slug, article=body.article)
    )


@router.delete(
    "/articles/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=realworld_errors(401, 403, 404, 422),
)
async def delete_article(
    slug: Slug, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep
) -> None:
    """Delete an article (its author only), with its comments, tags and favorites."""
    await service.delete_article(db=db, cache=cache, user_id=caller.user_id, slug=slug)


# Favorites


@router.post(
    "/articles/{slug}/favorite",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def favorite(slug: Slug, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep) -> Response:
    """Favorite an article (a like: favoritesCount is its exact likes_count)."""
    article = await service.favorite(
        db=db, cache=cache, user_id=caller.user_id, slug=slug, favorite=True
    )
    return json_response({"article": article})


@router.delete(
    "/articles/{slug}/favorite",
    response_model=ArticleEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def unfavorite(
    slug: Slug, caller: CurrentCaller, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Take back a favorite."""
    article = await service.favorite(
        db=db, cache=cache, user_id=caller.user_id, slug=slug, favorite=False
    )
    return json_response({"article": article})


# Comments


@router.get(
    "/articles/{slug}/comments",
    response_model=CommentsEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def list_comments(slug: Slug, caller: OptionalCaller, db: DatabaseDep) -> Response:
    """An article's comments, oldest first."""
    post_id = await service.published_post_id(db=db, slug=slug)
    rows = await comments_service.list_comments(
        db=db, post_id=post_id, viewer_id=viewer_id_of(caller)
    )
    return json_response({"comments": [service.comment_dict(row) for row in rows]})


@router.post(
    "/articles/{slug}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentEnvelope,
    responses=realworld_errors(401, 404, 422),
)
async def add_comment(
    slug: Slug, body: NewCommentIn, caller: CurrentCaller, db: DatabaseDep
) -> Response:
    """Comment on an article."""
    comment = await service.add_comment(
        db=db, slug=slug, user_id=caller.user_id, body=body.comment.body
    )
    return json_response({"comment": service.comment_dict(comment)}, 201)


@router.delete(
    "/articles/{slug}/comments/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=realworld_errors(401, 403, 404, 422),
)
async def delete_comment(
    slug: Slug,
    # The spec's name for it, which a 422 names too.
    comment_id: Annotated[int, Path(alias="id", ge=1, le=2**53 - 1)],
    caller: CurrentCaller,
    db: DatabaseDep,
) -> None:
    """Delete a comment (its author only)."""
    await service.delete_comment(db=db, slug=slug, comment_id=comment_id, user_id=caller.user_id)


# Tags


# The spec lists a 422 here too; with no input there is nothing to refuse.
@router.get("/tags", response_model=TagsEnvelope)
async def list_tags(request: Request) -> Response:
    """Tags on published articles, the most used first."""
    # The same for every caller: served from the cache, revalidated by ETag.
    entry = await service.cached_tags(db=request.app.state.db, cache=request.app.state.cache)
    return cached_response(request.headers, entry)
