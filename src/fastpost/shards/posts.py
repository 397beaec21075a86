"""Posts in sharded mode: a post lives with its author (same logical shard, so the same
database), and what belongs to it (likes, tags) lives with the post.

A request about one post goes to its database, read off its id, through the unsharded
services (fastpost.posts.service) given that database. Lists of several authors (the
newest posts, by tag) run the list's one statement on every database, each with the same
keyset bound and LIMIT, and merge the pages (fastpost.shards.merge): one statement per
database whatever the page. Offset paging would need offset + limit rows of every database
for each page, so sharded mode answers it 422 and pages by cursor only.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.exc import IntegrityError

from fastpost import cache_keys
from fastpost.cache import Cache, Entry
from fastpost.errors import InvalidInput, NotFound, Unauthorized
from fastpost.ids import shard_of
from fastpost.pagination import Page
from fastpost.posts import service as posts_service
from fastpost.posts import tags as post_tags
from fastpost.posts import writes as post_writes
from fastpost.posts.models import PostStatus
from fastpost.posts.queries import posts, select_posts, visible
from fastpost.posts.service import PostDict
from fastpost.posts.slugs import make_sharded_slug
from fastpost.responses import dump_json
from fastpost.shards.merge import fetch_each, merge_sorted
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import SEQUENCES
from fastpost.timeutil import utcnow
from fastpost.writes import Step, WriteProgram


def refuse_offset(page: Page) -> None:
    if page.offset:
        raise InvalidInput(
            "Sharded mode pages by cursor only: follow next_cursor",
            code="offset_unsupported",
            field="offset",
        )


async def list_newest(
    *, shards: Shards, viewer_id: int | None, page: Page, tag: str | None = None
) -> PostDict:
    """A page of the newest published posts of every author (with a tag, or not)."""
    refuse_offset(page)
    # The unsharded list's statement, as it is: each database holds whole logical shards.
    stmt = posts_service.list_statement(viewer_id is not None, False, tag is not None, page.shape)
    params = {
        **page.params,
        "viewer_id": viewer_id,
        "author_id": None,
        "tag": tag,
        "status": PostStatus.published.value,
    }
    pages = await fetch_each(shards.each(), stmt, params, owned_by=shards)
    # LIMIT limit + 1 on each: the one beyond the page tells whether another follows.
    rows = merge_sorted(pages, page.limit + 1)
    return posts_service.post_page(rows, page, viewer_id)


async def cached_newest(*, shards: Shards, cache: Cache, limit: int, tag: str | None) -> Entry:
    """The first page of list_newest as anonymous callers see it, under the unsharded key
    (ids are global, and the same writes drop it)."""

    async def load() -> Entry:
        page = await list_newest(shards=shards, viewer_id=None, page=Page(limit, None, 0), tag=tag)
        return Entry.of(dump_json(page), tags=posts_service.authors_of(page["items"]))

    key, name = posts_service.first_page_key(limit, None, tag)
    return await cache.get_or_load(key, load, ttl=posts_service.LIST_TTL, tags=[name])


def _most_liked(row: Any) -> tuple[int, int]:
    return row["likes_count"], row["id"]


async def list_popular(*, shards: Shards, viewer_id: int | None, limit: int) -> list[PostDict]:
    """The most liked published posts of every database: each database's top `limit`,
    merged by (likes_count, id) as the unsharded statement orders them."""
    stmt = posts_service.popular_statement(viewer_id is not None)
    pages = await fetch_each(
        shards.each(), stmt, {"limit": limit, "viewer_id": viewer_id}, owned_by=shards
    )
    rows = merge_sorted(pages, limit, key=_most_liked)
    return [posts_service.post_dict(row, viewer_id) for row in rows]


async def cached_popular(*, shards: Shards, cache: Cache, limit: int) -> Entry:
    """list_popular as anonymous callers see it, under the unsharded key."""

    async def load() -> Entry:
        items = await list_popular(shards=shards, viewer_id=None, limit=limit)
        return Entry.of(dump_json(items), tags=posts_service.authors_of(items))

    return await cache.get_or_load(
        cache_keys.popular(limit), load, ttl=posts_service.LIST_TTL, tags=[cache_keys.POPULAR]
    )


@cache
def _search_statement(with_viewer: bool) -> Select[Any]:
    """The unsharded search (PostgreSQL's), with its rank as a column to merge by, and the
    first :limit matches of a database (the offset is applied after the merge)."""
    query = func.websearch_to_tsquery(literal_column("'english'"), bindparam("q", type_=String))
    vector: ColumnElement[Any] = literal_column("posts.search_vector")
    rank = func.ts_rank(vector, query)
    return (
        select_posts(posts_service.post_read(with_viewer))
        .add_columns(rank.label("rank"))
        .where(posts.c.status == PostStatus.published.value, vector.op("@@")(query))
        .order_by(rank.desc(), posts.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


def _best_match(row: Any) -> tuple[float, int]:
    return row["rank"], row["id"]


async def search_posts(
    *, shards: Shards, viewer_id: int | None, q: str, limit: int, offset: int
) -> list[PostDict]:
    """Full-text search over every database, best match first: each database's first
    offset + limit matches, merged by (rank, id) as the unsharded statement orders them,
    then the page cut from the merge (the offset is bounded: pagination.MAX_OFFSET)."""
    stmt = _search_statement(viewer_id is not None)
    params = {"q": q, "limit": offset + limit, "viewer_id": viewer_id}
    pages = await fetch_each(shards.each(), stmt, params, owned_by=shards)
    rows = merge_sorted(pages, offset + limit, key=_best_match)[offset:]
    return [posts_service.post_dict(row, viewer_id) for row in rows]


# Every tag in use on a database with its count: the most used overall need not be among any
# one database's most used, so each database's whole list is read and the counts summed.
# As many rows as tags in use, whatever the number of posts (the counters of post_counts).
_TAG_COUNTS = (
    select(post_tags.tags.c.name, post_tags.post_counts.c.n)
    .join(
        post_tags.post_counts,
        (post_tags.post_counts.c.kind == "t")
        & (post_tags.post_counts.c.ref_id == post_tags.tags.c.id),
    )
    .where(post_tags.post_counts.c.n > 0)
)
TAGS_LIMIT = 1000  # as the unsharded list (fastpost.posts.tags.list_tags)


async def list_tags(*, shards: Shards) -> list[str]:
    """Tags on published posts of every database, the most used first (ties by name)."""
    counts: dict[str, int] = {}
    for rows in await fetch_each(shards.each(), _TAG_COUNTS, {}):
        for row in rows:
            counts[row["name"]] = counts.get(row["name"], 0) + int(row["n"])
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:TAGS_LIMIT]]


async def cached_tags(*, shards: Shards, cache: Cache) -> Entry:
    """list_tags as every caller sees it, under the unsharded key."""

    async def load() -> Entry:
        return Entry.of(dump_json(await list_tags(shards=shards)))

    return await cache.get_or_load(
        cache_keys.tags_in_use(), load, ttl=post_tags.TAGS_TTL, tags=[cache_keys.TAGS_IN_USE]
    )


async def create_post(
    *,
    shards: Shards,
    cache: Cache,
    author_id: int,
    title: str,
    content: str,
    status: PostStatus,
    description: str = "",
    tags: list[str] | tuple[str, ...] = (),
) -> PostDict:
    """Create a post on its author's shard, numbered from that logical shard's sequence."""
    values, names = posts_service.new_post(
        author_id=author_id,
        title=title,
        slug=make_sharded_slug(title, shard_of(author_id)),
        content=content,
        status=status,
        description=description,
        tags=tags,
    )
    values["id_sequence"] = SEQUENCES[shard_of(author_id)]
    try:
        async with shards.writing_for(author_id) as db:
            post_id, (username, image, _bio) = await db.write(
                post_writes.create_post(db.dialect, values, names, sharded=True), atomic=False
            )
    except IntegrityError:
        raise Unauthorized("Account no longer exists", code="account_gone") from None
    await posts_service.invalidate_create(cache, author_id=author_id, tags_in_use=bool(names))
    return posts_service.created_post(
        values, post_id=post_id, tags=names, username=username, image=image
    )


# The post a like is about, if the viewer may see it. Unlike the unsharded statement, it
# does not look for the viewer's account here: it lives on their own shard, and the account
# check of the request (fastpost.security) has just found it.
_POST_FOR_LIKE = select(posts.c.id, posts.c.author_id).where(
    posts.c.id == bindparam("post_id", type_=BigInteger), visible(with_viewer=True)
)


def _set_like(
    dialect: str, *, user_id: int, post_id: int, liked: bool
) -> WriteProgram[tuple[int, int, bool]]:
    params: dict[str, Any] = {"post_id": post_id, "viewer_id": user_id, "now": utcnow()}
    rows = yield Step(_POST_FOR_LIKE, params)
    if not rows:
        raise NotFound("Post not found", code="post_not_found")
    author_id = int(rows[0]["author_id"])
    changed = yield Step(
        posts_service.add_like(dialect) if liked else posts_service.REMOVE_LIKE, params
    )
    if changed:
        counts = yield Step(posts_service.COUNT_CHANGE, {**params, "delta": 1 if liked else -1})
    else:
        counts = yield Step(posts_service.COUNT, params)
    if not counts:
        raise NotFound("Post not found", code="post_not_found")
    return author_id, int(counts[0][0]), bool(changed)


async def set_like(
    *, shards: Shards, cache: Cache, user_id: int, post_id: int, liked: bool
) -> dict[str, Any]:
    """Like (or take back a like of) a post, on the post's shard: one transaction there."""
    try:
        async with shards.writing_for(post_id) as db:
            author_id, count, changed = await db.write(
                _set_like(db.dialect, user_id=user_id, post_id=post_id, liked=liked)
            )
    except IntegrityError:
        raise NotFound("Post not found", code="post_not_found") from None
    if changed:
        await posts_service.invalidate_like(cache, post_id=post_id, author_id=author_id)
    return {"post_id": post_id, "liked": liked, "likes_count": count}
