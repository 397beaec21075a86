"""The post read model: the one place that says what a read of posts returns, which posts a
caller may see, how lists are filtered and paged, and the lookups writes start from.

Every API reads posts through these statements: the native routes, the feed, comments
(visibility) and RealWorld, which only renames what they return (fastpost.realworld.service).
A statement is built once per shape (a PostRead, the filters present, the paging) and
cached; values travel as bound parameters with fixed names, so the database layer compiles
each once too (fastpost.db):

- :viewer_id        the caller (liked_by_me, following, their own drafts)
- :post_id, :slug   one post (by_key)
- :status           the listed status (lists)
- :author_id        an author filter by id, or :author by username
- :tag, :liked_by   a tag name; the username whose likes are listed (or :liked_by_id, their
                    id: sharded mode, where the liker's row is on another database)
- :limit, :offset, :cursor_created_at, :cursor_id   the page (pagination.keyset_page)

A page of any size is one statement with its authors, tags and the caller's flags (no N+1);
with `total`, each row also carries how many posts match in all, read from the counters of
post_counts (kept exact by database triggers, migration 0002), as an uncorrelated subquery
the database computes once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)

from fastpost.bound_lists import one_of
from fastpost.db import table_of
from fastpost.pagination import keyset_page
from fastpost.posts import tags as post_tags
from fastpost.posts.models import Like, Post, PostCount, PostStatus
from fastpost.social.models import Follow
from fastpost.users.models import User

posts = table_of(Post)
likes = table_of(Like)
users = table_of(User)
follows = table_of(Follow)
post_counts = table_of(PostCount)

Key = Literal["id", "slug"]
AuthorFilter = Literal["id", "username"] | None
# True: liked by the user named :liked_by; "id": by the user :liked_by_id.
LikedByFilter = bool | Literal["id"]

VIEWER = bindparam("viewer_id", type_=BigInteger)
_STATUS = bindparam("status", type_=String)
PUBLISHED: ColumnElement[str] = literal_column(f"'{PostStatus.published.value}'")
# For filters by username, apart from the users row joined as the author.
_named = users.alias("named")


@dataclass(frozen=True, slots=True)
class PostRead:
    """What a read returns besides the post's id, slug, title, description, likes_count,
    created_at, updated_at, author_id, author_username, author_image and tag_names."""

    viewer: bool = False  # liked_by_me of :viewer_id; their own drafts are visible
    following: bool = False  # whether :viewer_id follows each post's author
    content: bool = True
    status: bool = True
    author_bio: bool = False
    # created_at and updated_at as text, 2026-01-01T00:00:00.000Z (PostgreSQL only: see
    # _iso_ms); elsewhere they stay datetimes.
    iso_timestamps: bool = False


# On PostgreSQL a read can hand timestamps over already written, by to_char, truncated to
# the millisecond: a RealWorld page of 20 articles has 40 of them, and formatting them in
# Python was most of the page's row shaping. On SQLite they are still formatted in Python,
# so `fastpost profile GET '/api/articles?limit=20'` there shows realworld.service.iso_ms's
# share; benchmarks/bench_realworld.py measures the page's CPU per request beside asyncpg.
_UTC: ColumnElement[str] = literal_column("'UTC'")
_ISO_MS: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")


def _iso_ms(column: ColumnElement[Any], name: str) -> ColumnElement[Any]:
    return func.to_char(func.timezone(_UTC, column), _ISO_MS).label(name)


def following(author_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether :viewer_id follows the author (a correlated EXISTS on the follows key)."""
    # correlate_except: a statement may join follows itself, and this must not refer to it.
    return (
        exists()
        .where(follows.c.follower_id == VIEWER, follows.c.followee_id == author_id)
        .correlate_except(follows)
    )


def _liked_by_viewer() -> ColumnElement[bool]:
    # A correlated EXISTS probes the likes primary key once per row of the page: the same
    # statement, not a query per post.
    return (
        exists()
        .where(likes.c.user_id == VIEWER, likes.c.post_id == posts.c.id)
        .correlate_except(likes)
    )


def _columns(read: PostRead) -> list[Any]:
    created: Any = posts.c.created_at
    updated: Any = posts.c.updated_at
    if read.iso_timestamps:
        created, updated = _iso_ms(created, "created_at"), _iso_ms(updated, "updated_at")
    columns: list[Any] = [posts.c.id, posts.c.slug, posts.c.title, posts.c.description]
    if read.content:
        columns.append(posts.c.content)
    if read.status:
        columns.append(posts.c.status)
    columns += [
        posts.c.likes_count,
        created,
        updated,
        posts.c.author_id,
        users.c.username.label("author_username"),
        users.c.image.label("author_image"),
    ]
    if read.author_bio:
        columns.append(users.c.bio.label("author_bio"))
    columns.append(post_tags.tag_names_of_post().label("tag_names"))
    if read.viewer:
        columns.append(_liked_by_viewer().label("liked_by_me"))
        if read.following:
            columns.append(following(posts.c.author_id).label("following"))
    return columns


@cache
def select_posts(read: PostRead) -> Select[Any]:
    """SELECT posts with their author, their tags and what `read` asks for."""
    return select(*_columns(read)).select_from(posts.join(users, users.c.id == posts.c.author_id))


def visible(*, with_viewer: bool) -> ColumnElement[bool]:
    """Published posts, plus (with_viewer) the :viewer_id's own drafts."""
    published = posts.c.status == PUBLISHED
    if not with_viewer:
        return published
    return or_(published, posts.c.author_id == VIEWER)


def by_key(key: Key) -> ColumnElement[bool]:
    """The post with this :post_id, or this :slug."""
    if key == "id":
        return posts.c.id == bindparam("post_id", type_=BigInteger)
    return posts.c.slug == bindparam("slug", type_=String)


@cache
def post_statement(read: PostRead, key: Key) -> Select[Any]:
    """One post by id or slug, if the caller may see it."""
    return select_posts(read).where(by_key(key), visible(with_viewer=read.viewer))


@cache
def visible_id_statement(key: Key, with_viewer: bool) -> Select[Any]:
    """The id of the post by id or slug, if the caller may see it."""
    return select(posts.c.id).where(by_key(key), visible(with_viewer=with_viewer))


def _user_id_named(param: str) -> ColumnElement[Any]:
    return (
        select(_named.c.id)
        .where(_named.c.username == bindparam(param, type_=String))
        .scalar_subquery()
    )


def _author(author: AuthorFilter) -> ColumnElement[Any]:
    if author == "id":
        return bindparam("author_id", type_=BigInteger)
    return _user_id_named("author")


def _liker(liked_by: LikedByFilter) -> ColumnElement[Any]:
    if liked_by == "id":
        return bindparam("liked_by_id", type_=BigInteger)
    return _user_id_named("liked_by")


def _filters(
    *, tag: bool, author: AuthorFilter, liked_by: LikedByFilter, status: ColumnElement[Any]
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [posts.c.status == status]
    if tag:
        conditions.append(post_tags.has_tag())
    if author is not None:
        conditions.append(posts.c.author_id == _author(author))
    if liked_by:
        conditions.append(
            exists().where(likes.c.post_id == posts.c.id, likes.c.user_id == _liker(liked_by))
        )
    return conditions


def _counter(kind: str, ref_id: ColumnElement[Any]) -> Select[Any]:
    return select(func.coalesce(func.sum(post_counts.c.n), 0).label("total")).where(
        post_counts.c.kind == kind, post_counts.c.ref_id == ref_id
    )


@cache
def count_statement(*, tag: bool, author: AuthorFilter, liked_by: LikedByFilter) -> Select[Any]:
    """How many published posts match the filters: one counter of post_counts (a
    primary-key read at any size), or, for more than one filter, which no front end asks
    for, a count over the filtered set (each filter an indexed lookup)."""
    if tag + (author is not None) + bool(liked_by) > 1:
        filters = _filters(tag=tag, author=author, liked_by=liked_by, status=PUBLISHED)
        return select(func.count().label("total")).select_from(posts).where(*filters)
    if tag:
        tag_id = post_tags.tag_id_named()
        return _counter("t", tag_id)
    if author is not None:
        return _counter("u", _author(author))
    if liked_by:
        return _counter("f", _liker(liked_by))
    return _counter("a", literal(0, BigInteger))


def _with_total(stmt: Select[Any], count: Select[Any]) -> Select[Any]:
    # correlate(None): the count's own posts/follows must not be taken for the outer ones.
    return stmt.add_columns(count.correlate(None).scalar_subquery().label("total"))


@cache
def list_statement(
    read: PostRead,
    *,
    tag: bool = False,
    author: AuthorFilter = None,
    liked_by: LikedByFilter = False,
    shape: tuple[bool, bool] = (False, False),
    total: bool = False,
) -> Select[Any]:
    """A page of :status posts, newest first: of an author, with a tag, liked by a user, any
    of them; after the keyset bound or at the offset (`shape`, as pagination.Page.shape)."""
    stmt = select_posts(read)
    if total:
        stmt = _with_total(stmt, count_statement(tag=tag, author=author, liked_by=liked_by))
    stmt = stmt.where(*_filters(tag=False, author=author, liked_by=liked_by, status=_STATUS))
    if tag:
        # Read from the tag's rows of post_tags in index order (see posts.tags.tagged).
        stmt, created_at, post_id = post_tags.tagged(stmt)
        return keyset_page(stmt, shape, created_at, post_id)
    return keyset_page(stmt, shape, posts.c.created_at, posts.c.id)


# The feed's total is the sum of the followed authors' counters: as many rows as the caller
# follows, whatever the number of posts.
_FEED_COUNT = (
    select(func.coalesce(func.sum(post_counts.c.n), 0).label("total"))
    .select_from(
        follows.join(
            post_counts,
            (post_counts.c.kind == "u") & (post_counts.c.ref_id == follows.c.followee_id),
        )
    )
    .where(follows.c.follower_id == VIEWER)
)


def feed_count_statement() -> Select[Any]:
    """How many published posts the authors :viewer_id follows have."""
    return _FEED_COUNT


def _feed_page_by_author(shape: tuple[bool, bool]) -> Select[Any]:
    # Each followed author's newest published posts after the cursor, as many as the page
    # holds (plus the offset): the page is among them, since no other post of that author
    # can come before them. Then the newest of those few rows, in a top-N sort. Each range is
    # an index-only scan of ix_posts_author_published (migration 0007) where the visibility
    # map allows, so the work grows with the authors followed, not with the posts between
    # the page and now; and the plan is the same for every reader, so the generic plan the
    # plan cache keeps for a prepared statement is this one (tests/perf/test_feed.py).
    after_cursor, with_offset = shape
    limit = bindparam("limit", type_=Integer)
    offset = bindparam("offset", type_=Integer)
    authored = keyset_page(
        select(posts.c.id, posts.c.created_at).where(
            posts.c.author_id == follows.c.followee_id, posts.c.status == PUBLISHED
        ),
        (after_cursor, False),
        posts.c.created_at,
        posts.c.id,
    )
    if with_offset:
        authored = authored.limit(limit + offset)
    by_author = authored.lateral("authored")
    page = (
        select(by_author.c.id, by_author.c.created_at)
        .select_from(follows.join(by_author, true()))
        .where(follows.c.follower_id == VIEWER)
        .order_by(by_author.c.created_at.desc(), by_author.c.id.desc())
        .limit(limit)
    )
    return page.offset(offset) if with_offset else page


def _feed_page_newest_first(shape: tuple[bool, bool]) -> Select[Any]:
    # SQLite has no LATERAL: it walks ix_posts_status_created newest first and keeps the
    # followed authors' posts (a probe of the follows key each) until the page is full.
    return keyset_page(
        select(posts.c.id, posts.c.created_at)
        .join(follows, follows.c.followee_id == posts.c.author_id)
        .where(follows.c.follower_id == VIEWER, posts.c.status == PUBLISHED),
        shape,
        posts.c.created_at,
        posts.c.id,
    )


@cache
def feed_statement(
    dialect: str, read: PostRead, shape: tuple[bool, bool], *, total: bool = False
) -> Select[Any]:
    """A page of the published posts of the authors :viewer_id follows, newest first."""
    # The page's ids first, in a narrow subquery, then the wide columns, tags and likes for
    # those rows alone.
    # PostgreSQL reads the ids from each followed author's index range. The walk SQLite keeps
    # reads every published post newer than the page's oldest, so its cost depends on how
    # much of the site the reader follows: on `fastpost bench`'s seed, for the readers the
    # bench logs in, a first page touched 3,137 shared buffers on average (5,088 at most) as
    # the plan cache ran it, against 368 (1,026) per author; and once VACUUM had set the
    # visibility map, 325 (969), planned again on every call, against 182 (309) from a cached
    # plan (`python -m benchmarks.explain_feed`).
    select_ids = _feed_page_by_author if dialect == "postgresql" else _feed_page_newest_first
    page = select_ids(shape).subquery("page")
    stmt = (
        select_posts(read)
        .join(page, page.c.id == posts.c.id)
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )
    return _with_total(stmt, _FEED_COUNT) if total else stmt


@cache
def popular_statement(read: PostRead) -> Select[Any]:
    """The most liked published posts."""
    return (
        select_posts(read)
        .where(posts.c.status == PUBLISHED)
        .order_by(posts.c.likes_count.desc(), posts.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


@cache
def viewer_flags_statement(dialect: str, key: Key, *, with_following: bool) -> Select[Any]:
    """For the posts of the :post_ids (or :slugs), what depends on :viewer_id: liked_by_me
    (and following), with a fresh likes_count, and whether they may still see each."""
    # Visibility as a column, not a condition: in WHERE, SQLite's planner chose to read the
    # published posts by index (a MULTI-INDEX OR) over probing the primary key per id.
    if key == "id":
        where = one_of(posts.c.id, "post_ids", dialect=dialect, item_type=BigInteger())
    else:
        where = one_of(posts.c.slug, "slugs", dialect=dialect, item_type=String())
    columns: list[Any] = [
        posts.c.id if key == "id" else posts.c.slug,
        posts.c.likes_count,
        _liked_by_viewer().label("liked_by_me"),
    ]
    if with_following:
        columns.append(following(posts.c.author_id).label("following"))
    columns.append(visible(with_viewer=True).label("visible"))
    return select(*columns).where(where)


@cache
def post_for_write(key: Key) -> Select[Any]:
    """The post a change (update, delete) is checked against, by id or slug, locked until
    the commit (SQLite: BEGIN IMMEDIATE already holds the database's write lock)."""
    return (
        select(
            posts.c.id, posts.c.author_id, posts.c.status, posts.c.updated_at, posts.c.likes_count
        )
        .where(by_key(key))
        .with_for_update()
    )


@cache
def post_for_viewer_write(key: Key) -> Select[Any]:
    """For a like or a comment by :viewer_id: the post's id and author, if they may see it
    (NULL otherwise), and whether their account still exists (a token can outlive its
    account, and the insert would then fail on the foreign key), in one round trip."""
    target = select(posts.c.id, posts.c.author_id).where(by_key(key), visible(with_viewer=True))
    post_id = (
        bindparam("post_id", type_=BigInteger)
        if key == "id"
        else target.with_only_columns(posts.c.id).scalar_subquery()
    )
    return select(
        post_id.label("post_id"),
        target.with_only_columns(posts.c.author_id).scalar_subquery().label("author_id"),
        select(users.c.id).where(users.c.id == VIEWER).exists().label("account"),
    )


@dataclass(frozen=True, slots=True)
class PostRef:
    """A post named by id (the native API) or by slug (RealWorld)."""

    key: Key
    value: int | str

    @classmethod
    def by_id(cls, post_id: int) -> PostRef:
        return cls("id", post_id)

    @classmethod
    def by_slug(cls, slug: str) -> PostRef:
        return cls("slug", slug)

    @property
    def params(self) -> dict[str, Any]:
        """The bound parameter by_key(self.key) reads."""
        return {"post_id" if self.key == "id" else "slug": self.value}
