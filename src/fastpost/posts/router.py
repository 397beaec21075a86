"""HTTP routes: /posts, /users/{id}/posts and /tags."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query, Request, Response, status

from fastpost.cache import Cache, CacheDep
from fastpost.db import Database, DatabaseDep
from fastpost.errors import Forbidden, Unauthorized, error_responses
from fastpost.http_caching import cached_response, private_response
from fastpost.pagination import MAX_LIMIT, MAX_OFFSET, Page, PageQuery
from fastpost.posts import service
from fastpost.posts import tags as tags_service
from fastpost.posts.models import PostStatus
from fastpost.posts.queries import PostRef
from fastpost.posts.schemas import (
    LikeOut,
    PostCreate,
    PostListParams,
    PostOut,
    PostPage,
    PostUpdate,
)
from fastpost.responses import dump_json, json_response
from fastpost.routing import PrefixRouter
from fastpost.schemas import SafeText
from fastpost.security import CurrentUserId, OptionalUserId

router = PrefixRouter(prefix="/posts", tags=["posts"])
user_posts_router = PrefixRouter(prefix="/users", tags=["posts"])
tags_router = PrefixRouter(prefix="/tags", tags=["posts"])

PostIdPath = Annotated[int, Path(ge=1, le=2**53 - 1, description="Post id")]
UserIdPath = Annotated[int, Path(ge=1, le=2**53 - 1, description="User id")]
SmallLimit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def check_drafts_access(
    status: PostStatus, author_id: int | None, viewer_id: int | None
) -> int | None:
    """Drafts are listed for their author only; return the author filter to apply."""
    if status != PostStatus.draft:
        return author_id
    if viewer_id is None:
        raise Unauthorized("Log in to list your drafts")
    if author_id is not None and author_id != viewer_id:
        raise Forbidden("Drafts are visible to their author only", code="drafts_private")
    return viewer_id


# Both /posts and /posts/ answer directly: a redirect would cost clients a round trip.
@router.get("", include_in_schema=False, response_model=PostPage)
@router.get("/", response_model=PostPage, responses=error_responses(401, 403, 422))
async def list_posts(
    request: Request,
    db: DatabaseDep,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    params: Annotated[PostListParams, Query()],
) -> Response:
    """Posts, newest first, with their authors and tags; keyset-paginated by `next_cursor`;
    filtered by author, by tag, or both."""
    author_id = check_drafts_access(params.status, params.author_id, viewer_id)
    return await posts_page_response(
        request,
        db=db,
        cache=cache,
        viewer_id=viewer_id,
        page=params.to_page(),
        author_id=author_id,
        tag=params.tag,
        status=params.status,
    )


async def posts_page_response(
    request: Request,
    *,
    db: Database,
    cache: Cache,
    viewer_id: int | None,
    page: Page,
    author_id: int | None,
    tag: str | None = None,
    status: PostStatus = PostStatus.published,
) -> Response:
    """Answer with a page of posts, newest first, of one author or of all (drafts only for
    their author: check_drafts_access)."""
    if page.cursor is None and not page.offset and status == PostStatus.published:
        if viewer_id is None:
            # The first page is what most anonymous visitors load: served from the cache.
            entry = await service.cached_first_page(
                db=db, cache=cache, limit=page.limit, author_id=author_id, tag=tag
            )
            return cached_response(request.headers, entry)
        # The same cached page, with the caller's likes spliced in.
        body = await service.first_page_for_viewer(
            db=db, cache=cache, viewer_id=viewer_id, limit=page.limit, author_id=author_id, tag=tag
        )
        return private_response(body)
    return json_response(
        await service.list_posts(
            db=db, viewer_id=viewer_id, page=page, author_id=author_id, tag=tag, status=status
        )
    )


@router.post(
    "",
    include_in_schema=False,
    response_model=PostOut,
    status_code=status.HTTP_201_CREATED,
)
@router.post(
    "/",
    response_model=PostOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 413, 422),
)
async def create_post(
    body: PostCreate, user_id: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Publish a post (or save a draft) as the caller, with its tags."""
    created, _ = await service.create_post(
        db=db,
        cache=cache,
        author_id=user_id,
        title=body.title,
        content=body.content,
        status=body.status,
        description=body.description,
        tags=body.tags,
    )
    # Serialised once, in PostOut's shape: FastAPI passes a Response through.
    return json_response(created, status.HTTP_201_CREATED)


@router.get("/popular", response_model=list[PostOut], responses=error_responses(401, 422))
async def popular_posts(
    request: Request,
    db: DatabaseDep,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    limit: SmallLimit = 20,
) -> Response:
    """The most liked published posts."""
    if viewer_id is None:
        entry = await service.cached_popular(db=db, cache=cache, limit=limit)
        return cached_response(request.headers, entry)
    items = await service.list_popular_posts(db=db, viewer_id=viewer_id, limit=limit)
    return private_response(dump_json(items))


@router.get("/search", response_model=list[PostOut], responses=error_responses(401, 422))
async def search_posts(
    db: DatabaseDep,
    viewer_id: OptionalUserId,
    q: Annotated[SafeText, Query(min_length=1, max_length=200, description="Words to look for")],
    limit: SmallLimit = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """Full-text search in titles and contents, best match first."""
    return json_response(
        await service.search_posts(db=db, viewer_id=viewer_id, q=q, limit=limit, offset=offset)
    )


@router.get("/{post_id}", response_model=PostOut, responses=error_responses(401, 404, 422))
async def read_post(
    request: Request,
    post_id: PostIdPath,
    db: DatabaseDep,
    cache: CacheDep,
    viewer_id: OptionalUserId,
) -> Response:
    """One post with its author. Anonymous reads come from the cache, with an ETag and
    Last-Modified: a conditional request is answered 304 without touching the database."""
    if viewer_id is None:
        entry = await service.cached_post(db=db, cache=cache, post_id=post_id)
        return cached_response(request.headers, entry)
    return private_response(
        await service.post_for_viewer(db=db, cache=cache, viewer_id=viewer_id, post_id=post_id)
    )


@router.patch(
    "/{post_id}",
    response_model=PostOut,
    responses=error_responses(401, 403, 404, 412, 413, 422),
)
async def update_post(
    post_id: PostIdPath,
    body: PostUpdate,
    user_id: CurrentUserId,
    db: DatabaseDep,
    cache: CacheDep,
    if_match: Annotated[
        str | None,
        Header(description="The post's ETag as last read: 412 if it changed since"),
    ] = None,
) -> Response:
    """Change a post's title, content, description, status or tags (its author only)."""
    return await updated_post_response(
        db=db, cache=cache, user_id=user_id, post_id=post_id, body=body, if_match=if_match
    )


async def updated_post_response(
    *,
    db: Database,
    cache: Cache,
    user_id: int,
    post_id: int,
    body: PostUpdate,
    if_match: str | None,
) -> Response:
    """Apply the author's changes to a post; answer with the post and its new ETag."""
    changes = body.model_dump(exclude_unset=True)
    tags = changes.pop("tags", None)
    post = await service.update_post(
        db=db,
        cache=cache,
        user_id=user_id,
        post_id=post_id,
        changes=changes,
        tags=tags,
        if_match=if_match,
    )
    response = json_response(post)
    response.headers["etag"] = service.post_etag(
        post["id"], post["updated_at"], post["likes_count"]
    )
    return response


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_post(
    post_id: PostIdPath, user_id: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> None:
    """Delete a post (its author only)."""
    await service.delete_post(db=db, cache=cache, user_id=user_id, post=PostRef.by_id(post_id))


@router.post("/{post_id}/like", response_model=LikeOut, responses=error_responses(401, 404, 422))
async def like_post(
    post_id: PostIdPath, user_id: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Like a post. Idempotent: liking twice counts once."""
    result = await service.like_post(db=db, cache=cache, user_id=user_id, post_id=post_id)
    return json_response(result)


@router.delete("/{post_id}/like", response_model=LikeOut, responses=error_responses(401, 404, 422))
async def unlike_post(
    post_id: PostIdPath, user_id: CurrentUserId, db: DatabaseDep, cache: CacheDep
) -> Response:
    """Take back a like. Idempotent."""
    result = await service.unlike_post(db=db, cache=cache, user_id=user_id, post_id=post_id)
    return json_response(result)


@user_posts_router.get(
    "/{user_id}/posts", response_model=PostPage, responses=error_responses(401, 422)
)
async def list_user_posts(
    request: Request,
    user_id: UserIdPath,
    db: DatabaseDep,
    cache: CacheDep,
    viewer_id: OptionalUserId,
    params: PageQuery,
) -> Response:
    """A user's published posts, newest first."""
    return await posts_page_response(
        request, db=db, cache=cache, viewer_id=viewer_id, page=params.to_page(), author_id=user_id
    )


@tags_router.get("", include_in_schema=False, response_model=list[str])
@tags_router.get("/", response_model=list[str])
async def list_tags(request: Request, db: DatabaseDep, cache: CacheDep) -> Response:
    """Tags on published posts, the most used first (ties by name)."""
    # The list is the same for every caller, so every caller is served from the cache.
    return cached_response(request.headers, await tags_service.cached_tags(db=db, cache=cache))
