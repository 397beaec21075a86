"""What the comments domain does: comment on a post, list a post's comments, delete one."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, bindparam, exists, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.comments.models import Comment
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound, Unauthorized
from fastpost.pagination import Cursor, Page, cut_page
from fastpost.posts import service as posts_service
from fastpost.social.models import Follow
from fastpost.timeutil import utcnow
from fastpost.users.models import User

comments = table_of(Comment)
users = table_of(User)
follows = table_of(Follow)
posts = posts_service.posts

# A post's comments are few next to its readers; this bounds a response all the same.
MAX_COMMENTS = 500


def _select_comments(*, with_viewer: bool) -> Select[Any]:
    """Comments of :post_id, each with its author and (given a :viewer_id) whether the viewer
    follows that author: one statement whatever their number."""
    stmt = (
        select(
            comments.c.id,
            comments.c.post_id,
            comments.c.body,
            comments.c.created_at,
            comments.c.updated_at,
            comments.c.author_id,
            users.c.username.label("author_username"),
            users.c.bio.label("author_bio"),
            users.c.image.label("author_image"),
        )
        .select_from(comments.join(users, users.c.id == comments.c.author_id))
        .where(comments.c.post_id == bindparam("post_id", type_=BigInteger))
    )
    if with_viewer:
        following = exists().where(
            follows.c.follower_id == bindparam("viewer_id", type_=BigInteger),
            follows.c.followee_id == comments.c.author_id,
        )
        stmt = stmt.add_columns(following.label("following"))
    return stmt


@cache
def _comments_statement(with_viewer: bool) -> Select[Any]:
    """A post's comments, oldest first, up to MAX_COMMENTS (the RealWorld API has no pages)."""
    return (
        _select_comments(with_viewer=with_viewer)
        .order_by(comments.c.created_at, comments.c.id)
        .limit(MAX_COMMENTS)
    )


async def list_comments(*, db: Database, post_id: int, viewer_id: int | None) -> list[Row]:
    """Return a post's comments, oldest first, with their authors."""
    stmt = _comments_statement(viewer_id is not None)
    return list(await db.fetch_all(stmt, {"post_id": post_id, "viewer_id": viewer_id}))


@cache
def _page_statement(with_viewer: bool, shape: tuple[bool, bool]) -> Select[Any]:
    """A page of a post's comments, oldest first, after a cursor or at an offset.

    Oldest first: a thread reads in the order it was written (a reply below what it
    answers), new comments land after the pages a reader has already seen, and the RealWorld
    API, over the same table, lists them in the same order."""
    after_cursor, with_offset = shape
    # Joined to the post to see it is visible: a draft's comments are its author's alone.
    stmt = (
        _select_comments(with_viewer=False)
        .join(posts, posts.c.id == comments.c.post_id)
        .where(posts_service.visible_posts(with_viewer=with_viewer))
    )
    if after_cursor:
        # Ascending twin of pagination.keyset_page: the index on (post_id, created_at) is
        # entered at the cursor and read forward.
        stmt = stmt.where(
            tuple_(comments.c.created_at, comments.c.id)
            > tuple_(
                bindparam("cursor_created_at", type_=comments.c.created_at.type),
                bindparam("cursor_id", type_=BigInteger),
            )
        )
    stmt = stmt.order_by(comments.c.created_at, comments.c.id).limit(
        bindparam("limit", type_=Integer)
    )
    if with_offset:
        stmt = stmt.offset(bindparam("offset", type_=Integer))
    return stmt


def comment_dict(row: Row) -> dict[str, Any]:
    """A comment as the native API shows it."""
    return {
        "id": row["id"],
        "post_id": row["post_id"],
        "body": row["body"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author": {
            "id": row["author_id"],
            "username": row["author_username"],
            "image": row["author_image"],
        },
    }


def _cursor_of(row: Row) -> Cursor:
    return Cursor(row["created_at"], row["id"])


async def list_comments_page(
    *, db: Database, post_id: int, viewer_id: int | None, page: Page
) -> dict[str, Any]:
    """Return a page of a post's comments, oldest first; 404 when the viewer may not see
    the post."""
    stmt = _page_statement(viewer_id is not None, page.shape)
    rows = await db.fetch_all(stmt, {**page.params, "post_id": post_id, "viewer_id": viewer_id})
    if not rows:
        # An empty page costs one more read, to tell "no comments" from "no such post".
        await posts_service.ensure_post_visible(db=db, viewer_id=viewer_id, post_id=post_id)
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [comment_dict(row) for row in items], "next_cursor": cursor}


async def add_comment(
    *, session: AsyncSession, post_id: int, author_id: int, body: str
) -> dict[str, Any]:
    """Comment on a post as the caller; return the comment with its author."""
    now = utcnow()
    comment = Comment(
        post_id=post_id, author_id=author_id, body=body, created_at=now, updated_at=now
    )
    session.add(comment)
    try:
        await session.flush()
    except IntegrityError:
        # The token outlived its account (or the post went away meanwhile).
        raise Unauthorized("Account no longer exists", code="account_gone") from None
    row = (
        (
            await session.execute(
                _comments_statement(False).where(comments.c.id == comment.id),
                {"post_id": post_id},
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


async def delete_comment(
    *, session: AsyncSession, post_id: int, comment_id: int, user_id: int
) -> None:
    """Delete a comment of the post; only its author may."""
    author_id = await session.scalar(
        select(comments.c.author_id).where(
            comments.c.id == comment_id, comments.c.post_id == post_id
        )
    )
    if author_id is None:
        raise NotFound("Comment not found", code="comment_not_found", field="comment")
    if author_id != user_id:
        raise Forbidden("Only its author may delete a comment", code="not_author", field="comment")
    await session.execute(comments.delete().where(comments.c.id == comment_id))
