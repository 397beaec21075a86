"""Reads in the RealWorld API's shapes, and the writes it adds around fastpost's services.

Every read is one statement built once per shape (filters present, caller known or not,
dialect) with bound parameters, like the native reads (see fastpost.db): an article comes
with its author, whether the caller follows that author and favorited it, and its tags, in
one round trip however many articles the page holds. A list is one statement: the page,
each row carrying the total as an uncorrelated subquery that the database computes once
(an InitPlan on PostgreSQL). Only a page past the end, which has no row to carry it, asks
for the total on its own.

The first page of the unfiltered list, as an anonymous caller sees it, is what a front
end's home page loads: it is cached as response bytes under the same tags as the native
first page ("posts:first", and "user:{id}" of each author shown), so the writes that drop
one drop the other.

`articlesCount` is exact and cheap at any size: it is read from post_counts, which database
triggers keep exact in the transaction of every write (migration 0002). A request filtering
by more than one of tag, author and favorited, which no front end makes, has no counter
and is counted over the filtered set; each filter there is an indexed lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost import fragments
from fastpost.bound_lists import one_of
from fastpost.cache import Cache, Entry, cache_key
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound
from fastpost.posts import service as posts_service
from fastpost.posts import tags as post_tags_service
from fastpost.posts.models import Like, Post, PostCount, PostStatus, PostTag, Tag
from fastpost.posts.service import LIST_TTL
from fastpost.responses import dump_json
from fastpost.social import service as social_service
from fastpost.social.models import Follow
from fastpost.timeutil import as_utc, utcnow
from fastpost.users.models import User
from fastpost.writes import Step, WriteProgram

posts = table_of(Post)
likes = table_of(Like)
users = table_of(User)
follows = table_of(Follow)
tags = table_of(Tag)
post_tags = table_of(PostTag)
post_counts = table_of(PostCount)

# For filters by username, apart from the users row joined as the author.
_named = users.alias("named")
_VIEWER = bindparam("viewer_id", type_=BigInteger)
_PUBLISHED = PostStatus.published.value


def iso_ms(moment: datetime) -> str:
    """2026-01-01T00:00:00.000Z: the API's timestamps, always with milliseconds and zone."""
    moment = as_utc(moment)
    # isoformat ends in "+00:00" for UTC; it takes a third less time than strftime (timeit,
    # this machine: 3.5 vs 4.8 us).
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


# On PostgreSQL the statement hands the API's timestamps over already written, by to_char,
# which truncates to the millisecond as iso_ms does: a page of 20 articles has 40 of them,
# and formatting them in Python was 140 us of the page's 240 us of row shaping (timeit, this
# machine). SQLite returns the datetimes; iso_ms writes them.
_UTC: ColumnElement[str] = literal_column("'UTC'")
_ISO_MS: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")


def _timestamp(column: ColumnElement[Any], dialect: str, name: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.to_char(func.timezone(_UTC, column), _ISO_MS).label(name)
    return column.label(name)


def api_timestamp(value: str | datetime) -> str:
    """A timestamp column of _timestamp() as the API writes it."""
    return value if isinstance(value, str) else iso_ms(value)


def _user_id_named(param: str) -> ColumnElement[Any]:
    return (
        select(_named.c.id)
        .where(_named.c.username == bindparam(param, type_=String))
        .scalar_subquery()
    )


def _tag_names(dialect: str) -> ColumnElement[Any]:
    """The post's tag names as one value (the native API reads them the same way)."""
    return post_tags_service.tag_names_of_post()


def _following(author_id: ColumnElement[Any]) -> ColumnElement[bool]:
    # correlate_except: the feed joins follows itself, and this must not refer to that row.
    return (
        exists()
        .where(follows.c.follower_id == _VIEWER, follows.c.followee_id == author_id)
        .correlate_except(follows)
    )


def _select_articles(dialect: str, *, with_viewer: bool, with_body: bool) -> Select[Any]:
    columns: list[Any] = [
        posts.c.id,
        posts.c.slug,
        posts.c.title,
        posts.c.description,
        _timestamp(posts.c.created_at, dialect, "created"),
        _timestamp(posts.c.updated_at, dialect, "updated"),
        posts.c.likes_count,
        posts.c.author_id,
        users.c.username,
        users.c.bio,
        users.c.image,
        _tag_names(dialect).label("tag_names"),
    ]
    if with_body:
        columns.append(posts.c.content)
    if with_viewer:
        favorited = (
            exists()
            .where(likes.c.user_id == _VIEWER, likes.c.post_id == posts.c.id)
            .correlate_except(likes)
        )
        columns += [
            favorited.label("favorited"),
            _following(posts.c.author_id).label("following"),
        ]
    return select(*columns).select_from(posts.join(users, users.c.id == posts.c.author_id))


def _newest_first(
    stmt: Select[Any],
    created_at: ColumnElement[Any] = posts.c.created_at,
    row_id: ColumnElement[Any] = posts.c.id,
    *,
    offset: bool,
) -> Select[Any]:
    stmt = stmt.order_by(created_at.desc(), row_id.desc()).limit(bindparam("limit", type_=Integer))
    # A first page has a statement of its own, with no OFFSET. PostgreSQL plans a prepared
    # statement again on every execution while its generic plan looks costlier than the
    # custom ones, and a generic plan cannot tell how many rows `OFFSET $n` skips: with it,
    # the feed's statement was planned on every request (about 1 ms of the database's CPU),
    # without it the generic plan was used and each execution took half the time (1,000
    # articles by `fastpost seed`, the statement prepared and run 300 times through asyncpg).
    return stmt.offset(bindparam("offset", type_=Integer)) if offset else stmt


def _filters(tag: bool, author: bool, favorited: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [posts.c.status == _PUBLISHED]
    if tag:
        conditions.append(post_tags_service.has_tag())
    if author:
        conditions.append(posts.c.author_id == _user_id_named("author"))
    if favorited:
        conditions.append(
            exists().where(
                likes.c.post_id == posts.c.id, likes.c.user_id == _user_id_named("favorited")
            )
        )
    return conditions


def _with_total(stmt: Select[Any], count: Select[Any]) -> Select[Any]:
    # correlate(None): the count's own posts/follows must not be taken for the outer ones.
    return stmt.add_columns(count.correlate(None).scalar_subquery().label("total"))


@cache
def _list_statement(
    dialect: str, with_viewer: bool, tag: bool, author: bool, favorited: bool, offset: bool
) -> Select[Any]:
    stmt = _select_articles(dialect, with_viewer=with_viewer, with_body=False)
    stmt = _with_total(stmt, _count_statement(tag, author, favorited))
    stmt = stmt.where(*_filters(False, author, favorited))
    if tag:
        # Read from the tag's rows of post_tags in index order (see posts.tags.tagged).
        stmt, created_at, post_id = post_tags_service.tagged(stmt)
        return _newest_first(stmt, created_at, post_id, offset=offset)
    return _newest_first(stmt, offset=offset)


def _counter(kind: str, ref_id: ColumnElement[Any]) -> Select[Any]:
    return select(func.coalesce(func.sum(post_counts.c.n), 0).label("total")).where(
        post_counts.c.kind == kind, post_counts.c.ref_id == ref_id
    )


@cache
def _count_statement(tag: bool, author: bool, favorited: bool) -> Select[Any]:
    if tag + author + favorited > 1:
        return (
            select(func.count().label("total"))
            .select_from(posts)
            .where(*_filters(tag, author, favorited))
        )
    if tag:
        tag_id = (
            select(tags.c.id).where(tags.c.name == bindparam("tag", type_=String)).scalar_subquery()
        )
        return _counter("t", tag_id)
    if author:
        return _counter("u", _user_id_named("author"))
    if favorited:
        return _counter("f", _user_id_named("favorited"))
    return _counter("a", literal(0, BigInteger))


@cache
def _feed_statement(dialect: str, offset: bool) -> Select[Any]:
    stmt = _with_total(_select_articles(dialect, with_viewer=True, with_body=False), _FEED_COUNT)
    stmt = stmt.join(follows, follows.c.followee_id == posts.c.author_id).where(
        follows.c.follower_id == _VIEWER, posts.c.status == _PUBLISHED
    )
    return _newest_first(stmt, offset=offset)


# The feed's total is the sum of the followed authors' counters: as many rows as the caller
# follows, whatever the number of articles.
_FEED_COUNT = (
    select(func.coalesce(func.sum(post_counts.c.n), 0).label("total"))
    .select_from(
        follows.join(
            post_counts,
            (post_counts.c.kind == "u") & (post_counts.c.ref_id == follows.c.followee_id),
        )
    )
    .where(follows.c.follower_id == _VIEWER)
)


@cache
def _article_statement(dialect: str, with_viewer: bool) -> Select[Any]:
    visible: ColumnElement[bool] = posts.c.status == _PUBLISHED
    if with_viewer:
        visible = or_(visible, posts.c.author_id == _VIEWER)
    # status: a published article is shared by every caller (see article_for_viewer).
    stmt = _select_articles(dialect, with_viewer=with_viewer, with_body=True)
    return stmt.add_columns(posts.c.status).where(
        posts.c.slug == bindparam("slug", type_=String), visible
    )


def article_dict(row: Row, *, with_body: bool) -> dict[str, Any]:
    """An article as the API shows it (lists leave the body out)."""
    article: dict[str, Any] = {
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "tagList": post_tags_service.tag_list(row["tag_names"]),
        "createdAt": api_timestamp(row["created"]),
        "updatedAt": api_timestamp(row["updated"]),
        "favorited": bool(row.get("favorited", False)),
        "favoritesCount": row["likes_count"],
        "author": {
            "username": row["username"],
            "bio": row["bio"],
            "image": row["image"],
            "following": bool(row.get("following", False)),
        },
    }
    if with_body:
        article["body"] = row["content"]
    return article


async def _rows_and_total(
    db: Database, page: Select[Any], count: Select[Any], params: Mapping[str, Any]
) -> tuple[Sequence[Row], int]:
    rows = await db.fetch_all(page, params)
    if rows:
        return rows, int(rows[0]["total"])
    totals = await db.fetch_all(count, params)
    return rows, int(totals[0]["total"]) if totals else 0


def _articles(rows: Sequence[Row], total: int) -> dict[str, Any]:
    return {
        "articles": [article_dict(row, with_body=False) for row in rows],
        "articlesCount": total,
    }


async def _page(
    db: Database, page: Select[Any], count: Select[Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    return _articles(*await _rows_and_total(db, page, count, params))


async def list_articles(
    *,
    db: Database,
    viewer_id: int | None,
    tag: str | None,
    author: str | None,
    favorited: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Return a page of published articles, newest first, and how many match in all."""
    shape = (tag is not None, author is not None, favorited is not None)
    params = {
        "viewer_id": viewer_id,
        "tag": tag,
        "author": author,
        "favorited": favorited,
        "limit": limit,
        "offset": offset,
    }
    page = _list_statement(db.dialect, viewer_id is not None, *shape, offset > 0)
    return await _page(db, page, _count_statement(*shape), params)


async def cached_first_articles(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The newest published articles, unfiltered, as an anonymous caller sees them."""

    async def load() -> Entry:
        params = {"viewer_id": None, "limit": limit, "offset": 0}
        page = _list_statement(db.dialect, False, False, False, False, False)
        rows, total = await _rows_and_total(db, page, _count_statement(False, False, False), params)
        return _first_articles_entry(rows, total)

    key = _first_articles_key(limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=["posts:first"])


def _first_articles_entry(rows: Sequence[Row], total: int) -> Entry:
    authors = sorted({f"user:{row['author_id']}" for row in rows})
    page = _articles(rows, total)
    # Rows read for a logged-in caller carry their flags: the shared page has none.
    page["articles"] = [_anonymous(article) for article in page["articles"]]
    return Entry.of(dump_json(page), tags=authors)


async def feed(*, db: Database, viewer_id: int, limit: int, offset: int) -> dict[str, Any]:
    """Return a page of articles by the authors the caller follows, newest first."""
    params = {"viewer_id": viewer_id, "limit": limit, "offset": offset}
    return await _page(db, _feed_statement(db.dialect, offset > 0), _FEED_COUNT, params)


async def get_article(*, db: Database, viewer_id: int | None, slug: str) -> dict[str, Any]:
    """Return one article with its body."""
    stmt = _article_statement(db.dialect, viewer_id is not None)
    row = await db.fetch_one(stmt, {"slug": slug, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("not found", code="article_not_found", field="article")
    return article_dict(row, with_body=True)


# Cached for every caller: an article by slug and the tags in use, as anonymous callers see
# them (response bytes with an ETag). A logged-in caller is served the same entries of an
# article and of the home page, with their favorited and author.following, and a fresh
# favoritesCount, read by one statement for the page's slugs (the native posts do the same
# and say why: fastpost.posts.service, "For a logged-in caller").


def article_key(slug: str) -> str:
    # The slug goes last: whatever it holds cannot make the key of another entry.
    return cache_key("realworld", "article", slug)


def tags_key() -> str:
    return cache_key("realworld", "tags")


def _first_articles_key(limit: int) -> str:
    return cache_key("realworld", "articles", "first", limit)


def _anonymous(article: dict[str, Any]) -> dict[str, Any]:
    """The article as a caller who follows and favorites nothing sees it."""
    return {**article, "favorited": False, "author": {**article["author"], "following": False}}


def _article_entry(row: Row) -> Entry:
    article = _anonymous(article_dict(row, with_body=True))
    # Every write to the post drops post_tag (update, delete, favorite: posts.service
    # stale_after_post_write), and a change of its author's profile drops the author's tag.
    return Entry.of(
        dump_json({"article": article}),
        tags=[posts_service.post_tag(row["id"]), f"user:{row['author_id']}"],
    )


async def cached_article(*, db: Database, cache: Cache, slug: str) -> Entry:
    """One published article, with its body, as an anonymous caller sees it."""

    async def load() -> Entry:
        row = await db.fetch_one(_article_statement(db.dialect, False), {"slug": slug})
        if row is None:
            raise NotFound("not found", code="article_not_found", field="article")
        return _article_entry(row)

    return await cache.get_or_load(article_key(slug), load, ttl=posts_service.POST_TTL)


async def cached_tags(*, db: Database, cache: Cache) -> Entry:
    """The tags in use, in the API's envelope, the same for every caller."""

    async def load() -> Entry:
        return Entry.of(dump_json({"tags": await post_tags_service.list_tags(db=db)}))

    return await cache.get_or_load(
        tags_key(), load, ttl=post_tags_service.TAGS_TTL, tags=[post_tags_service.TAGS_CACHE_TAG]
    )


@cache
def _viewer_flags_statement(dialect: str) -> Select[Any]:
    favorited = (
        exists()
        .where(likes.c.user_id == _VIEWER, likes.c.post_id == posts.c.id)
        .correlate_except(likes)
    )
    # Visibility as a column, not a condition: see posts.service._viewer_flags_statement.
    visible = or_(posts.c.status == _PUBLISHED, posts.c.author_id == _VIEWER)
    return select(
        posts.c.slug,
        posts.c.likes_count,
        favorited.label("favorited"),
        _following(posts.c.author_id).label("following"),
        visible.label("visible"),
    ).where(one_of(posts.c.slug, "slugs", dialect=dialect, item_type=String()))


_PER_VIEWER = ("favorited", "favoritesCount", "following")
_ARTICLES = "realworld"  # the name of an entry's fragments (fastpost.fragments.derived)


def _article_end(row: Row) -> bytes:
    return b',"following":%s},"favorited":%s,"favoritesCount":%d}' % (
        b"true" if row["following"] else b"false",
        b"true" if row["favorited"] else b"false",
        row["likes_count"],
    )


def _ends_of(rows: Sequence[Row]) -> dict[str, bytes]:
    return {row["slug"]: _article_end(row) for row in rows}


async def _viewer_ends(db: Database, viewer_id: int, slugs: list[str]) -> dict[str, bytes]:
    """Each article's end as the viewer sees it; one gone or hidden since has none."""
    if not slugs:
        return {}
    rows = await db.fetch_all(
        _viewer_flags_statement(db.dialect), {"slugs": slugs, "viewer_id": viewer_id}
    )
    return _ends_of([row for row in rows if row["visible"]])


def _start(article: dict[str, Any]) -> tuple[str, bytes]:
    start = fragments.item_start(article, drop=_PER_VIEWER, nested_last="author")
    return article["slug"], start


def _split_article(body: bytes) -> fragments.Fragments[str]:
    return fragments.Fragments(b'{"article":', (_start(orjson.loads(body)["article"]),), b"}")


def _split_articles(body: bytes) -> fragments.Fragments[str]:
    page = orjson.loads(body)
    tail = b'],"articlesCount":%d}' % page["articlesCount"]
    return fragments.Fragments(b'{"articles":[', tuple(map(_start, page["articles"])), tail)


class _OwnDraft(NotFound):
    """An article only its author may see: not for the shared cache (as absent to every
    other caller waiting on the same load)."""


async def article_for_viewer(*, db: Database, cache: Cache, viewer_id: int, slug: str) -> bytes:
    """One article as the viewer sees it: the shared entry, with their flags."""
    loaded: list[Row] = []

    async def load() -> Entry:
        stmt = _article_statement(db.dialect, True)
        row = await db.fetch_one(stmt, {"slug": slug, "viewer_id": viewer_id})
        loaded.append(row or {})
        if row is None:
            raise NotFound("not found", code="article_not_found", field="article")
        if row["status"] != _PUBLISHED:
            raise _OwnDraft("not found", code="article_not_found", field="article")
        return _article_entry(row)

    try:
        entry = await cache.get_or_load(article_key(slug), load, ttl=posts_service.POST_TTL)
    except NotFound:
        if not loaded:
            # Another request's load (anonymous: published articles only) found nothing;
            # the article may still be this caller's draft.
            return dump_json({"article": await get_article(db=db, viewer_id=viewer_id, slug=slug)})
        if not loaded[0]:
            raise
        return dump_json({"article": article_dict(loaded[0], with_body=True)})
    shared = fragments.derived(entry, _ARTICLES, _split_article)
    ends = _ends_of(loaded) if loaded else await _viewer_ends(db, viewer_id, [slug])
    if slug not in ends:
        raise NotFound("not found", code="article_not_found", field="article")
    return shared.complete(ends)


async def first_articles_for_viewer(
    *, db: Database, cache: Cache, viewer_id: int, limit: int
) -> bytes:
    """The home page of cached_first_articles as the viewer sees it: the shared entry, with
    their flags."""
    loaded: list[Row] = []

    async def load() -> Entry:
        params = {"viewer_id": viewer_id, "limit": limit, "offset": 0}
        page = _list_statement(db.dialect, True, False, False, False, False)
        rows, total = await _rows_and_total(db, page, _count_statement(False, False, False), params)
        loaded.extend(rows)
        return _first_articles_entry(rows, total)

    key = _first_articles_key(limit)
    entry = await cache.get_or_load(key, load, ttl=LIST_TTL, tags=["posts:first"])
    shared = fragments.derived(entry, _ARTICLES, _split_articles)
    ends = _ends_of(loaded) if loaded else await _viewer_ends(db, viewer_id, shared.keys)
    return shared.complete(ends)


def new_article(post: Mapping[str, Any], author_bio: str | None) -> dict[str, Any]:
    """A post just created (posts.service.create_post) as an article: nobody has
    favorited it yet, and its author cannot follow themselves."""
    created = iso_ms(post["created_at"])
    return {
        "slug": post["slug"],
        "title": post["title"],
        "description": post["description"],
        "tagList": post["tags"],
        "createdAt": created,
        "updatedAt": created,
        "favorited": False,
        "favoritesCount": 0,
        "author": {
            "username": post["author"]["username"],
            "bio": author_bio,
            "image": post["author"]["image"],
            "following": False,
        },
        "body": post["content"],
    }


_POST_BY_SLUG = select(posts.c.id, posts.c.author_id, posts.c.status).where(
    posts.c.slug == bindparam("slug", type_=String)
)


def _favorite(
    dialect: str, *, user_id: int, slug: str, favorite: bool
) -> WriteProgram[tuple[int, int, bool, dict[str, Any]]]:
    rows = yield Step(_POST_BY_SLUG, {"slug": slug})
    if not rows or (rows[0][2] != _PUBLISHED and rows[0][1] != user_id):
        raise NotFound("not found", code="article_not_found", field="article")
    post_id: int = rows[0][0]
    author_id, _, changed = yield from posts_service.set_like(
        dialect, user_id=user_id, post_id=post_id, liked=favorite
    )
    # Read back in the same transaction: the caller sees what it wrote, from the primary.
    (article,) = yield Step(_article_statement(dialect, True), {"slug": slug, "viewer_id": user_id})
    return post_id, author_id, changed, dict(article)


def _own_article(*, slug: str, user_id: int) -> WriteProgram[int]:
    """The id of the article with this slug, if the user wrote it (404, 403 otherwise)."""
    rows = yield Step(_POST_BY_SLUG, {"slug": slug})
    if not rows or (rows[0][2] != _PUBLISHED and rows[0][1] != user_id):
        raise NotFound("not found", code="article_not_found", field="article")
    if rows[0][1] != user_id:
        raise Forbidden("forbidden", code="not_author", field="article")
    post_id: int = rows[0][0]
    return post_id


def _delete_article(*, slug: str, user_id: int) -> WriteProgram[int]:
    post_id = yield from _own_article(slug=slug, user_id=user_id)
    yield from posts_service.delete_steps(user_id=user_id, post_id=post_id)
    return post_id


async def delete_article(*, db: Database, cache: Cache, user_id: int, slug: str) -> None:
    """Delete the author's article, with its comments, tags and favorites."""
    post_id = await db.write(_delete_article(slug=slug, user_id=user_id))
    await posts_service.invalidate_delete(cache, post_id=post_id, author_id=user_id)


def _update_article(
    dialect: str, *, user_id: int, slug: str, changes: dict[str, Any], tags: list[str] | None
) -> WriteProgram[tuple[int, int, dict[str, Any]]]:
    post_id = yield from _own_article(slug=slug, user_id=user_id)
    author_id = user_id
    if changes or tags is not None:
        author_id = yield from posts_service.update_steps(
            dialect, user_id=user_id, post_id=post_id, changes=changes, tags=tags, if_match=None
        )
    (article,) = yield Step(_article_statement(dialect, True), {"slug": slug, "viewer_id": user_id})
    return post_id, author_id, dict(article)


async def update_article(
    *,
    db: Database,
    cache: Cache,
    user_id: int,
    slug: str,
    changes: dict[str, Any],
    tags: list[str] | None,
) -> dict[str, Any]:
    """Apply the author's changes to an article; return it as they now see it."""
    post_id, author_id, row = await db.write(
        _update_article(db.dialect, user_id=user_id, slug=slug, changes=changes, tags=tags)
    )
    if changes or tags is not None:
        await posts_service.invalidate_update(
            cache, post_id=post_id, author_id=author_id, changes=changes, tags=tags
        )
    return _written_article(db.dialect, row)


def _written_article(dialect: str, row: dict[str, Any]) -> dict[str, Any]:
    if dialect != "postgresql":
        # The writer's rows come straight from sqlite3: timestamps as stored, as text.
        for name in ("created", "updated"):
            row[name] = datetime.fromisoformat(row[name])
    return article_dict(row, with_body=True)


async def favorite(
    *, db: Database, cache: Cache, user_id: int, slug: str, favorite: bool
) -> dict[str, Any]:
    """Favorite (or not) an article as the caller, and return it as they now see it."""
    try:
        post_id, author_id, changed, row = await db.write(
            _favorite(db.dialect, user_id=user_id, slug=slug, favorite=favorite)
        )
    except IntegrityError:
        # The article or the account was deleted meanwhile.
        raise NotFound("not found", code="article_not_found", field="article") from None
    if changed:
        await posts_service.invalidate_like(cache, post_id=post_id, author_id=author_id)
    return _written_article(db.dialect, row)


async def post_by_slug(
    *, session: AsyncSession, slug: str, user_id: int, must_own: bool = False
) -> int:
    """Return the id of the post with this slug as the caller may see it (404), and, with
    must_own, only if the caller wrote it (403)."""
    row = (await session.execute(_POST_BY_SLUG, {"slug": slug})).first()
    if row is None or (row.status != _PUBLISHED and row.author_id != user_id):
        raise NotFound("not found", code="article_not_found", field="article")
    if must_own and row.author_id != user_id:
        raise Forbidden("forbidden", code="not_author", field="article")
    post_id: int = row.id
    return post_id


@cache
def _profile_statement(with_viewer: bool) -> Select[Any]:
    stmt = select(users.c.id, users.c.username, users.c.bio, users.c.image).where(
        users.c.username == bindparam("username", type_=String), users.c.is_active
    )
    following = _following(users.c.id) if with_viewer else false()
    return stmt.add_columns(following.label("following"))


def profile_dict(row: Row) -> dict[str, Any]:
    return {
        "username": row["username"],
        "bio": row["bio"],
        "image": row["image"],
        "following": bool(row["following"]),
    }


async def get_profile(*, db: Database, viewer_id: int | None, username: str) -> dict[str, Any]:
    """Return a user's profile and whether the caller follows them."""
    stmt = _profile_statement(viewer_id is not None)
    row = await db.fetch_one(stmt, {"username": username, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("not found", code="user_not_found", field="profile")
    return profile_dict(row)


def _change_follow(
    dialect: str, params: dict[str, Any], *, username: str, follow: bool
) -> WriteProgram[dict[str, Any]]:
    rows = yield Step(_profile_statement(True), {"username": username, **params})
    if not rows:
        raise NotFound("not found", code="user_not_found", field="profile")
    target = dict(rows[0])
    change = {**params, "follower_id": params["viewer_id"], "followee_id": target["id"]}
    if follow:
        yield from social_service.follow_steps(dialect, change)
    else:
        yield from social_service.unfollow_steps(change)
    return target


async def change_follow(
    *, db: Database, cache: Cache, viewer_id: int, username: str, follow: bool
) -> dict[str, Any]:
    """Follow (or stop following) a user by name; return their profile as the caller now
    sees it."""
    params = {"viewer_id": viewer_id, "now": utcnow()}
    try:
        target = await db.write(
            _change_follow(db.dialect, params, username=username, follow=follow)
        )
    except IntegrityError:
        # The account was deleted since the check.
        raise NotFound("not found", code="user_not_found", field="profile") from None
    await social_service.invalidate_friends(cache, viewer_id, target["id"])
    return {**profile_dict(target), "following": follow}


def comment_dict(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "createdAt": iso_ms(row["created_at"]),
        "updatedAt": iso_ms(row["updated_at"]),
        "body": row["body"],
        "author": {
            "username": row["author_username"],
            "bio": row["author_bio"],
            "image": row["author_image"],
            "following": bool(row.get("following", False)),
        },
    }


_POST_ID_BY_SLUG = select(posts.c.id).where(
    posts.c.slug == bindparam("slug", type_=String), posts.c.status == _PUBLISHED
)


async def published_post_id(*, db: Database, slug: str) -> int:
    """Return the id of the published post with this slug (404 if none)."""
    row = await db.fetch_one(_POST_ID_BY_SLUG, {"slug": slug})
    if row is None:
        raise NotFound("not found", code="article_not_found", field="article")
    post_id: int = row["id"]
    return post_id
