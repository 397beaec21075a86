"""What the posts domain does: list, read, search, write and like posts.

Reads are Core statements on an autocommit connection, one statement per request: the
page, each post's author and, for a logged-in caller, whether they liked it come back in
one round trip whatever the page size (no N+1). Writes run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
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
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from fastpost.db import insert_ignoring_conflicts, table_of
from fastpost.errors import Forbidden, NotFound, Unauthorized
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts.models import Like, Post, PostStatus
from fastpost.timeutil import utcnow
from fastpost.users.models import User

posts = table_of(Post)
likes = table_of(Like)
users = table_of(User)
# SQLite's full-text index (made by the migration, not mapped).
posts_fts = table("posts_fts", column("rowid"), column("rank"))

_POST_COLUMNS = (
    posts.c.id,
    posts.c.title,
    posts.c.content,
    posts.c.status,
    posts.c.likes_count,
    posts.c.created_at,
    posts.c.updated_at,
    posts.c.author_id,
    users.c.username.label("author_username"),
    users.c.image.label("author_image"),
)

PostDict = dict[str, Any]


def select_posts(viewer_id: int | None) -> Select[Any]:
    """SELECT posts with their author and, for a logged-in viewer, whether they liked each."""
    stmt = select(*_POST_COLUMNS).select_from(posts.join(users, users.c.id == posts.c.author_id))
    if viewer_id is not None:
        # A correlated EXISTS probes the likes primary key once per row of the page: the
        # same statement, not a query per post.
        liked = exists().where(likes.c.user_id == viewer_id, likes.c.post_id == posts.c.id)
        stmt = stmt.add_columns(liked.label("liked_by_me"))
    return stmt


def visible_to(viewer_id: int | None) -> Any:
    """Published posts, plus the viewer's own drafts."""
    if viewer_id is None:
        return posts.c.status == PostStatus.published
    return or_(posts.c.status == PostStatus.published, posts.c.author_id == viewer_id)


def newest_first(stmt: Select[Any], page: Page) -> Select[Any]:
    """Order posts by (created_at, id) descending and apply the page."""
    return keyset_page(stmt, page, posts.c.created_at, posts.c.id)


def _cursor_of(row: Row[Any]) -> Cursor:
    return Cursor(row.created_at, row.id)


def post_dict(row: Row[Any], viewer_id: int | None) -> PostDict:
    return {
        "id": row.id,
        "title": row.title,
        "content": row.content,
        "status": row.status,
        "likes_count": row.likes_count,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "author": {"id": row.author_id, "username": row.author_username, "image": row.author_image},
        "liked_by_me": bool(row.liked_by_me) if viewer_id is not None else None,
    }


def post_page(rows: Sequence[Row[Any]], page: Page, viewer_id: int | None) -> PostDict:
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [post_dict(r, viewer_id) for r in items], "next_cursor": cursor}


async def list_posts(
    *,
    conn: AsyncConnection,
    viewer_id: int | None,
    page: Page,
    author_id: int | None = None,
    status: PostStatus = PostStatus.published,
) -> PostDict:
    """Return a page of posts, newest first."""
    stmt = select_posts(viewer_id).where(posts.c.status == status)
    if author_id is not None:
        stmt = stmt.where(posts.c.author_id == author_id)
    rows = (await conn.execute(newest_first(stmt, page))).all()
    return post_page(rows, page, viewer_id)


async def get_post(*, conn: AsyncConnection, viewer_id: int | None, post_id: int) -> PostDict:
    """Return one post; another author's draft is as absent as a missing post."""
    stmt = select_posts(viewer_id).where(posts.c.id == post_id, visible_to(viewer_id))
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound("Post not found", code="post_not_found")
    return post_dict(row, viewer_id)


async def list_popular_posts(
    *, conn: AsyncConnection, viewer_id: int | None, limit: int
) -> list[PostDict]:
    """Return the most liked published posts."""
    stmt = (
        select_posts(viewer_id)
        .where(posts.c.status == PostStatus.published)
        .order_by(posts.c.likes_count.desc(), posts.c.id.desc())
        .limit(limit)
    )
    return [post_dict(r, viewer_id) for r in (await conn.execute(stmt)).all()]


def _fts5_query(q: str) -> str:
    # Each word becomes a quoted FTS5 string, so user input is matched as words (all of
    # them) and never parsed as FTS5 syntax (NEAR, column filters, unbalanced quotes).
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


async def search_posts(
    *, conn: AsyncConnection, viewer_id: int | None, q: str, limit: int, offset: int
) -> list[PostDict]:
    """Full-text search over published posts' title and content, best match first."""
    stmt = select_posts(viewer_id).where(posts.c.status == PostStatus.published)
    if conn.dialect.name == "postgresql":
        query = func.websearch_to_tsquery(literal_column("'english'"), q)
        vector: ColumnElement[Any] = literal_column("posts.search_vector")
        stmt = stmt.where(vector.op("@@")(query)).order_by(
            func.ts_rank(vector, query).desc(), posts.c.id.desc()
        )
    else:
        match = _fts5_query(q)
        if not match:
            return []
        # FTS5's hidden `rank` column is bm25(); ordering by it lets FTS5 sort internally.
        stmt = (
            stmt.join(posts_fts, posts_fts.c.rowid == posts.c.id)
            .where(text("posts_fts MATCH :match").bindparams(match=match))
            .order_by(posts_fts.c.rank, posts.c.id.desc())
        )
    rows = (await conn.execute(stmt.limit(limit).offset(offset))).all()
    return [post_dict(r, viewer_id) for r in rows]


async def _read_back(session: AsyncSession, post_id: int, viewer_id: int) -> PostDict:
    row = (await session.execute(select_posts(viewer_id).where(posts.c.id == post_id))).one()
    return post_dict(row, viewer_id)


async def create_post(
    *, session: AsyncSession, author_id: int, title: str, content: str, status: PostStatus
) -> PostDict:
    """Create a post by the caller and return it as the API shows it."""
    now = utcnow()
    post = Post(
        author_id=author_id,
        title=title,
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
    *, session: AsyncSession, user_id: int, post_id: int, changes: dict[str, Any]
) -> PostDict:
    """Apply the author's changes to a post."""
    post = await _post_for_write(session, post_id, user_id)
    for name, value in changes.items():
        setattr(post, name, value)
    post.updated_at = utcnow()
    await session.flush()
    return await _read_back(session, post.id, user_id)


async def delete_post(*, session: AsyncSession, user_id: int, post_id: int) -> None:
    """Delete the author's post, with its likes."""
    post = await _post_for_write(session, post_id, user_id)
    await session.delete(post)
    await session.flush()


async def _likeable(session: AsyncSession, post_id: int, user_id: int) -> None:
    # One round trip asks both: may this user see the post, and is the user still there?
    # A token can outlive its account, and the like would then fail on the foreign key and
    # be reported as a missing post.
    post_found = select(posts.c.id).where(posts.c.id == post_id, visible_to(user_id)).exists()
    account_found = select(users.c.id).where(users.c.id == user_id).exists()
    row = (
        await session.execute(select(post_found.label("post"), account_found.label("account")))
    ).one()
    if not row.account:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if not row.post:
        raise NotFound("Post not found", code="post_not_found")


async def like_post(*, session: AsyncSession, user_id: int, post_id: int) -> dict[str, Any]:
    """Like a post; liking it again changes nothing."""
    await _likeable(session, post_id, user_id)
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
        "likes_count": await _count_change(session, post_id, +1 if added else 0),
    }


async def unlike_post(*, session: AsyncSession, user_id: int, post_id: int) -> dict[str, Any]:
    """Take a like back; taking back a like that is not there changes nothing."""
    await _likeable(session, post_id, user_id)
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
        "likes_count": await _count_change(session, post_id, -1 if removed else 0),
    }


async def _count_change(session: AsyncSession, post_id: int, delta: int) -> int:
    # `likes_count = likes_count + 1` is evaluated by the database under the row lock, so
    # concurrent likes never overwrite each other's increments (no read-modify-write here).
    if delta == 0:
        count = await session.scalar(select(posts.c.likes_count).where(posts.c.id == post_id))
    else:
        count = await session.scalar(
            posts.update()
            .where(posts.c.id == post_id)
            .values(likes_count=posts.c.likes_count + delta)
            .returning(posts.c.likes_count)
        )
    if count is None:
        raise NotFound("Post not found", code="post_not_found")
    return int(count)
