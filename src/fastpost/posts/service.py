"""What the posts domain does: list, read, search, write, tag and like posts.

Reads are one statement per request: the page, each post's author, its tags and, for a
logged-in caller, whether they liked it come back in one round trip whatever the page size
(no N+1).
Each read statement is built once per shape (anonymous or not, filtered by author or not,
after a cursor or not) and cached; values travel as bound parameters, so the database layer
compiles it once too (see fastpost.db). Writes run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.cache import Cache, Entry, cache_key
from fastpost.db import Database, Row, after_commit, insert_ignoring_conflicts, table_of
from fastpost.errors import Forbidden, NotFound, PreconditionFailed, Unauthorized
from fastpost.http_caching import etag_matches, http_date
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts import tags as post_tags
from fastpost.posts.models import Like, Post, PostStatus
from fastpost.responses import dump_json
from fastpost.timeutil import as_utc, unix_micros, utcnow
from fastpost.users.models import User

posts = table_of(Post)
likes = table_of(Like)
users = table_of(User)
# SQLite's full-text index (made by the migration, not mapped).
posts_fts = table("posts_fts", column("rowid"), column("rank"))

_POST_COLUMNS = (
    posts.c.id,
    posts.c.slug,
    posts.c.title,
    posts.c.description,
    posts.c.content,
    posts.c.status,
    posts.c.likes_count,
    posts.c.created_at,
    posts.c.updated_at,
    posts.c.author_id,
    users.c.username.label("author_username"),
    users.c.image.label("author_image"),
    post_tags.tag_names_of_post().label("tag_names"),
)
_PUBLISHED: ColumnElement[str] = literal_column(f"'{PostStatus.published.value}'")

PostDict = dict[str, Any]


def select_posts(*, with_viewer: bool) -> Select[Any]:
    """SELECT posts with their author, their tags and, given a :viewer_id, whether they
    liked each."""
    stmt = select(*_POST_COLUMNS).select_from(posts.join(users, users.c.id == posts.c.author_id))
    if with_viewer:
        # A correlated EXISTS probes the likes primary key once per row of the page: the
        # same statement, not a query per post.
        liked = exists().where(
            likes.c.user_id == bindparam("viewer_id", type_=BigInteger),
            likes.c.post_id == posts.c.id,
        )
        stmt = stmt.add_columns(liked.label("liked_by_me"))
    return stmt


def visible_posts(*, with_viewer: bool) -> ColumnElement[bool]:
    """Published posts, plus the :viewer_id's own drafts."""
    published = posts.c.status == _PUBLISHED
    if not with_viewer:
        return published
    return or_(published, posts.c.author_id == bindparam("viewer_id", type_=BigInteger))


def newest_first(stmt: Select[Any], shape: tuple[bool, bool]) -> Select[Any]:
    """Order posts by (created_at, id) descending and page them."""
    return keyset_page(stmt, shape, posts.c.created_at, posts.c.id)


def _cursor_of(row: Row) -> Cursor:
    return Cursor(row["created_at"], row["id"])


def post_dict(row: Row, viewer_id: int | None) -> PostDict:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "content": row["content"],
        "status": row["status"],
        "likes_count": row["likes_count"],
        "tags": post_tags.tag_list(row["tag_names"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author": {
            "id": row["author_id"],
            "username": row["author_username"],
            "image": row["author_image"],
        },
        "liked_by_me": bool(row["liked_by_me"]) if viewer_id is not None else None,
    }


def post_page(rows: Sequence[Row], page: Page, viewer_id: int | None) -> PostDict:
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [post_dict(r, viewer_id) for r in items], "next_cursor": cursor}


@cache
def _list_statement(
    with_viewer: bool, by_author: bool, by_tag: bool, shape: tuple[bool, bool]
) -> Select[Any]:
    stmt = select_posts(with_viewer=with_viewer).where(posts.c.status == bindparam("status"))
    if by_author:
        stmt = stmt.where(posts.c.author_id == bindparam("author_id", type_=BigInteger))
    if by_tag:
        stmt, created_at, post_id = post_tags.tagged(stmt)
        return keyset_page(stmt, shape, created_at, post_id)
    return newest_first(stmt, shape)


async def list_posts(
    *,
    db: Database,
    viewer_id: int | None,
    page: Page,
    author_id: int | None = None,
    tag: str | None = None,
    status: PostStatus = PostStatus.published,
) -> PostDict:
    """Return a page of posts, newest first, optionally of one author or with one tag."""
    stmt = _list_statement(
        viewer_id is not None, author_id is not None, tag is not None, page.shape
    )
    params = {
        **page.params,
        "viewer_id": viewer_id,
        "author_id": author_id,
        "tag": tag,
        "status": status.value,
    }
    return post_page(await db.fetch_all(stmt, params), page, viewer_id)


@cache
def _detail_statement(with_viewer: bool) -> Select[Any]:
    return select_posts(with_viewer=with_viewer).where(
        posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=with_viewer)
    )


async def get_post(*, db: Database, viewer_id: int | None, post_id: int) -> PostDict:
    """Return one post; another author's draft is as absent as a missing post."""
    stmt = _detail_statement(viewer_id is not None)
    row = await db.fetch_one(stmt, {"post_id": post_id, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("Post not found", code="post_not_found")
    return post_dict(row, viewer_id)


@cache
def _popular_statement(with_viewer: bool) -> Select[Any]:
    return (
        select_posts(with_viewer=with_viewer)
        .where(posts.c.status == _PUBLISHED)
        .order_by(posts.c.likes_count.desc(), posts.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


async def list_popular_posts(*, db: Database, viewer_id: int | None, limit: int) -> list[PostDict]:
    """Return the most liked published posts."""
    stmt = _popular_statement(viewer_id is not None)
    rows = await db.fetch_all(stmt, {"limit": limit, "viewer_id": viewer_id})
    return [post_dict(r, viewer_id) for r in rows]


def _fts5_query(q: str) -> str:
    # Each word becomes a quoted FTS5 string, so user input is matched as words (all of
    # them) and never parsed as FTS5 syntax (NEAR, column filters, unbalanced quotes).
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


@cache
def _search_statement(dialect: str, with_viewer: bool) -> Select[Any]:
    stmt = select_posts(with_viewer=with_viewer).where(posts.c.status == _PUBLISHED)
    if dialect == "postgresql":
        query = func.websearch_to_tsquery(literal_column("'english'"), bindparam("q"))
        vector: ColumnElement[Any] = literal_column("posts.search_vector")
        stmt = stmt.where(vector.op("@@")(query)).order_by(
            func.ts_rank(vector, query).desc(), posts.c.id.desc()
        )
    else:
        # FTS5's hidden `rank` column is bm25(); ordering by it lets FTS5 sort internally.
        stmt = (
            stmt.join(posts_fts, posts_fts.c.rowid == posts.c.id)
            .where(text("posts_fts MATCH :q"))
            .order_by(posts_fts.c.rank, posts.c.id.desc())
        )
    return stmt.limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer))


async def search_posts(
    *, db: Database, viewer_id: int | None, q: str, limit: int, offset: int
) -> list[PostDict]:
    """Full-text search over published posts' title and content, best match first."""
    if db.dialect != "postgresql":
        q = _fts5_query(q)
        if not q:
            return []
    stmt = _search_statement(db.dialect, viewer_id is not None)
    params = {"q": q, "limit": limit, "offset": offset, "viewer_id": viewer_id}
    return [post_dict(r, viewer_id) for r in await db.fetch_all(stmt, params)]


@cache
def _exists_statement(with_viewer: bool) -> Select[Any]:
    return select(posts.c.id).where(
        posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=with_viewer)
    )


async def ensure_post_visible(*, db: Database, viewer_id: int | None, post_id: int) -> None:
    """Raise 404 unless the post exists and the viewer may see it."""
    stmt = _exists_statement(viewer_id is not None)
    if await db.fetch_one(stmt, {"post_id": post_id, "viewer_id": viewer_id}) is None:
        raise NotFound("Post not found", code="post_not_found")


# Cached representations, for anonymous callers (what a logged-in caller sees depends on
# them, liked_by_me, and is read from the database). Tags name what an entry shows, so that
# a write drops every entry it makes stale: see invalidate_post and users.service.
POST_TTL = 300.0  # Redis lifetime; invalidation normally ends an entry long before
LIST_TTL = 30.0


def post_key(post_id: int) -> str:
    return cache_key("post", post_id)


def post_etag(post_id: int, updated_at: datetime, likes_count: int) -> str:
    """A version, not a hash: every worker computes it from the row alone, and a PATCH can
    check If-Match against the locked row without rendering anything."""
    return f'"p{post_id}-{unix_micros(updated_at)}-{likes_count}"'


def _post_entry(row: Row) -> Entry:
    return Entry.of(
        dump_json(post_dict(row, None)),
        etag=post_etag(row["id"], row["updated_at"], row["likes_count"]),
        last_modified=http_date(as_utc(row["updated_at"])),
        tags=[f"user:{row['author_id']}"],
    )


def _authors_of(items: list[PostDict]) -> list[str]:
    return sorted({f"user:{item['author']['id']}" for item in items})


async def cached_post(*, db: Database, cache: Cache, post_id: int) -> Entry:
    """A published post as an anonymous caller sees it."""

    async def load() -> Entry:
        row = await db.fetch_one(_detail_statement(False), {"post_id": post_id})
        if row is None:
            raise NotFound("Post not found", code="post_not_found")
        return _post_entry(row)

    return await cache.get_or_load(post_key(post_id), load, ttl=POST_TTL)


async def cached_first_page(
    *,
    db: Database,
    cache: Cache,
    limit: int,
    author_id: int | None = None,
    tag: str | None = None,
) -> Entry:
    """The first page of the newest published posts (of one author, or of everyone; with a
    tag, or not)."""

    async def load() -> Entry:
        page = await list_posts(
            db=db, viewer_id=None, page=Page(limit, None, 0), author_id=author_id, tag=tag
        )
        return Entry.of(dump_json(page), tags=_authors_of(page["items"]))

    # Every post write drops "posts:first" and its author's tag (see invalidate_post), so
    # the pages filtered by a tag need no tag of their own: a write that adds or removes a
    # tag, or changes a post that carries one, is such a write.
    name = "posts:first" if author_id is None else f"author:{author_id}:posts"
    key = cache_key(
        "posts", "first", "all" if author_id is None else author_id, limit, *_tag_part(tag)
    )
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[name])


def _tag_part(tag: str | None) -> tuple[str, ...]:
    # Keys are joined with ":", which a tag name may contain: the name goes last, after a
    # marker, so that no tag can make the key of another filter.
    return () if tag is None else ("tag", tag)


async def cached_popular(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The most liked published posts."""

    async def load() -> Entry:
        items = await list_popular_posts(db=db, viewer_id=None, limit=limit)
        return Entry.of(dump_json(items), tags=_authors_of(items))

    key = cache_key("posts", "popular", limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=["posts:popular"])


def invalidate_post(
    session: AsyncSession,
    cache: Cache,
    *,
    post_id: int | None,
    author_id: int,
    tags_in_use: bool = False,
) -> None:
    """After the commit, drop what showed the post: itself, the lists it may be on, its
    author's overview, and (tags_in_use) the list of tags, whose membership and order
    follow how many published posts carry each tag."""
    keys = [] if post_id is None else [post_key(post_id)]
    tags = ["posts:first", "posts:popular", f"author:{author_id}:posts", f"overview:{author_id}"]
    if tags_in_use:
        tags.append(post_tags.TAGS_CACHE_TAG)
    after_commit(session, lambda: cache.invalidate(keys=keys, tags=tags))


async def _read_back(session: AsyncSession, post_id: int, viewer_id: int) -> PostDict:
    # Inside the write transaction, so the caller sees what it just wrote.
    result = await session.execute(
        _detail_statement(True), {"post_id": post_id, "viewer_id": viewer_id}
    )
    return post_dict(result.mappings().one(), viewer_id)


async def create_post(
    *,
    session: AsyncSession,
    cache: Cache,
    author_id: int,
    title: str,
    content: str,
    status: PostStatus,
    description: str = "",
    tags: Sequence[str] = (),
) -> PostDict:
    """Create a post by the caller, with its tags, and return it as the API shows it."""
    now = utcnow()
    post = Post(
        author_id=author_id,
        title=title,
        description=description,
        content=content,
        status=status,
        created_at=now,
        updated_at=now,
    )
    session.add(post)
    try:
        await session.flush()
    except IntegrityError:
        # The token outlived its account: the author row is gone.
        raise Unauthorized("Account no longer exists", code="account_gone") from None
    if tags:
        await post_tags.set_post_tags(session=session, post_id=post.id, names=tags)
    invalidate_post(session, cache, post_id=None, author_id=author_id, tags_in_use=bool(tags))
    return await _read_back(session, post.id, author_id)


async def _post_for_write(session: AsyncSession, post_id: int, user_id: int) -> Post:
    post = (
        await session.execute(select(Post).where(Post.id == post_id).with_for_update())
    ).scalar_one_or_none()
    if post is None or (post.status != PostStatus.published and post.author_id != user_id):
        raise NotFound("Post not found", code="post_not_found")
    if post.author_id != user_id:
        raise Forbidden("Only the author may change or delete this post", code="not_author")
    return post


async def update_post(
    *,
    session: AsyncSession,
    cache: Cache,
    user_id: int,
    post_id: int,
    changes: dict[str, Any],
    tags: Sequence[str] | None = None,
    if_match: str | None = None,
) -> PostDict:
    """Apply the author's changes to a post and, unless `tags` is None, make it carry
    exactly those tags; with `if_match`, only if nobody changed it since the client read it
    (412 otherwise: no lost update)."""
    post = await _post_for_write(session, post_id, user_id)
    # Checked under the row lock taken by _post_for_write, so no write can slip in between.
    if if_match is not None and not etag_matches(
        if_match, post_etag(post.id, post.updated_at, post.likes_count), weak=False
    ):
        raise PreconditionFailed(
            "The post changed since you read it: fetch it again and reapply your change"
        )
    # A change of tags or of status changes how many published posts carry each tag.
    invalidate_post(
        session,
        cache,
        post_id=post_id,
        author_id=post.author_id,
        tags_in_use=tags is not None or "status" in changes,
    )
    for name, value in changes.items():
        setattr(post, name, value)
    # Bumped for a change of tags alone too: updated_at is the post's version, in its ETag.
    post.updated_at = utcnow()
    await session.flush()
    if tags is not None:
        await post_tags.set_post_tags(session=session, post_id=post.id, names=tags)
    return await _read_back(session, post.id, user_id)


async def delete_post(*, session: AsyncSession, cache: Cache, user_id: int, post_id: int) -> None:
    """Delete the author's post, with its likes, tags and comments."""
    post = await _post_for_write(session, post_id, user_id)
    invalidate_post(session, cache, post_id=post_id, author_id=post.author_id, tags_in_use=True)
    await session.delete(post)
    await session.flush()


_LIKEABLE = select(
    select(posts.c.author_id)
    .where(posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=True))
    .scalar_subquery()
    .label("author_id"),
    select(users.c.id)
    .where(users.c.id == bindparam("viewer_id", type_=BigInteger))
    .exists()
    .label("account"),
)


async def visible_post_author(*, session: AsyncSession, post_id: int, user_id: int) -> int:
    """Return the post's author, checking in one round trip that the user may see the post
    and that the user still exists (a token can outlive its account, and a like or comment
    would then fail on the foreign key and be reported as a missing post)."""
    result = await session.execute(_LIKEABLE, {"post_id": post_id, "viewer_id": user_id})
    row = result.one()
    if not row.account:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if row.author_id is None:
        raise NotFound("Post not found", code="post_not_found")
    author_id: int = row.author_id
    return author_id


async def like_post(
    *, session: AsyncSession, cache: Cache, user_id: int, post_id: int
) -> dict[str, Any]:
    """Like a post; liking it again changes nothing."""
    author_id = await visible_post_author(session=session, post_id=post_id, user_id=user_id)
    inserted = insert_ignoring_conflicts(session, likes).values(
        user_id=user_id, post_id=post_id, created_at=utcnow()
    )
    try:
        added = (await session.execute(inserted.returning(likes.c.post_id))).first()
    except IntegrityError:
        # The post or the account was deleted since the check above.
        raise NotFound("Post not found", code="post_not_found") from None
    return {
        "post_id": post_id,
        "liked": True,
        "likes_count": await _count_change(session, cache, post_id, author_id, +1 if added else 0),
    }


async def unlike_post(
    *, session: AsyncSession, cache: Cache, user_id: int, post_id: int
) -> dict[str, Any]:
    """Take a like back; taking back a like that is not there changes nothing."""
    author_id = await visible_post_author(session=session, post_id=post_id, user_id=user_id)
    removed = (
        await session.execute(
            likes.delete()
            .where(likes.c.user_id == user_id, likes.c.post_id == post_id)
            .returning(likes.c.post_id)
        )
    ).first()
    return {
        "post_id": post_id,
        "liked": False,
        "likes_count": await _count_change(
            session, cache, post_id, author_id, -1 if removed else 0
        ),
    }


async def _count_change(
    session: AsyncSession, cache: Cache, post_id: int, author_id: int, delta: int
) -> int:
    # `likes_count = likes_count + 1` is evaluated by the database under the row lock, so
    # concurrent likes never overwrite each other's increments (no read-modify-write here).
    if delta == 0:
        count = await session.scalar(select(posts.c.likes_count).where(posts.c.id == post_id))
    else:
        invalidate_post(session, cache, post_id=post_id, author_id=author_id)
        count = await session.scalar(
            posts.update()
            .where(posts.c.id == post_id)
            .values(likes_count=posts.c.likes_count + delta)
            .returning(posts.c.likes_count)
        )
    if count is None:
        raise NotFound("Post not found", code="post_not_found")
    return int(count)
