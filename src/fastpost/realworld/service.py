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
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.cache import Cache, Entry, cache_key
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound
from fastpost.posts import tags as post_tags_service
from fastpost.posts.models import Like, Post, PostCount, PostStatus, PostTag, Tag
from fastpost.posts.service import LIST_TTL
from fastpost.responses import dump_json
from fastpost.social.models import Follow
from fastpost.timeutil import as_utc
from fastpost.users.models import User

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
) -> Select[Any]:
    return (
        stmt.order_by(created_at.desc(), row_id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


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
    dialect: str, with_viewer: bool, tag: bool, author: bool, favorited: bool
) -> Select[Any]:
    stmt = _select_articles(dialect, with_viewer=with_viewer, with_body=False)
    stmt = _with_total(stmt, _count_statement(tag, author, favorited))
    stmt = stmt.where(*_filters(False, author, favorited))
    if tag:
        # Read from the tag's rows of post_tags in index order (see posts.tags.tagged).
        stmt, created_at, post_id = post_tags_service.tagged(stmt)
        return _newest_first(stmt, created_at, post_id)
    return _newest_first(stmt)


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
def _feed_statement(dialect: str) -> Select[Any]:
    stmt = _with_total(_select_articles(dialect, with_viewer=True, with_body=False), _FEED_COUNT)
    stmt = stmt.join(follows, follows.c.followee_id == posts.c.author_id).where(
        follows.c.follower_id == _VIEWER, posts.c.status == _PUBLISHED
    )
    return _newest_first(stmt)


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
    return _select_articles(dialect, with_viewer=with_viewer, with_body=True).where(
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
    page = _list_statement(db.dialect, viewer_id is not None, *shape)
    return await _page(db, page, _count_statement(*shape), params)


async def cached_first_articles(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The newest published articles, unfiltered, as an anonymous caller sees them."""

    async def load() -> Entry:
        params = {"viewer_id": None, "limit": limit, "offset": 0}
        page = _list_statement(db.dialect, False, False, False, False)
        rows, total = await _rows_and_total(db, page, _count_statement(False, False, False), params)
        authors = sorted({f"user:{row['author_id']}" for row in rows})
        return Entry.of(dump_json(_articles(rows, total)), tags=authors)

    key = cache_key("realworld", "articles", "first", limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=["posts:first"])


async def feed(*, db: Database, viewer_id: int, limit: int, offset: int) -> dict[str, Any]:
    """Return a page of articles by the authors the caller follows, newest first."""
    params = {"viewer_id": viewer_id, "limit": limit, "offset": offset}
    return await _page(db, _feed_statement(db.dialect), _FEED_COUNT, params)


async def get_article(*, db: Database, viewer_id: int | None, slug: str) -> dict[str, Any]:
    """Return one article with its body."""
    stmt = _article_statement(db.dialect, viewer_id is not None)
    row = await db.fetch_one(stmt, {"slug": slug, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("not found", code="article_not_found", field="article")
    return article_dict(row, with_body=True)


async def read_article_back(*, session: AsyncSession, viewer_id: int, slug: str) -> dict[str, Any]:
    """Return an article as the caller sees it inside the write transaction."""
    dialect = session.get_bind().dialect.name
    result = await session.execute(
        _article_statement(dialect, True), {"slug": slug, "viewer_id": viewer_id}
    )
    return article_dict(result.mappings().one(), with_body=True)


_POST_BY_SLUG = select(posts.c.id, posts.c.author_id, posts.c.status).where(
    posts.c.slug == bindparam("slug", type_=String)
)


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


async def profile_in_session(
    *, session: AsyncSession, viewer_id: int, username: str
) -> dict[str, Any]:
    """Return a profile as the caller sees it inside the write transaction (404 if none)."""
    result = await session.execute(
        _profile_statement(True), {"username": username, "viewer_id": viewer_id}
    )
    row = result.mappings().first()
    if row is None:
        raise NotFound("not found", code="user_not_found", field="profile")
    return dict(row)


_CREDENTIALS_BY_EMAIL = select(users.c.id, users.c.password_hash).where(
    users.c.email == bindparam("email", type_=String), users.c.is_active
)


async def credentials_by_email(*, db: Database, email: str) -> Row | None:
    """Return the id and password hash of the active account with this email."""
    return await db.fetch_one(_CREDENTIALS_BY_EMAIL, {"email": email})


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
