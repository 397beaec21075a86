"""What the comments domain does: comment on a post, list a post's comments, delete one."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Select, bindparam, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.comments.models import Comment
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound, Unauthorized
from fastpost.social.models import Follow
from fastpost.timeutil import utcnow
from fastpost.users.models import User

comments = table_of(Comment)
users = table_of(User)
follows = table_of(Follow)

# A post's comments are few next to its readers; this bounds a response all the same.
MAX_COMMENTS = 500


@cache
def _comments_statement(with_viewer: bool) -> Select[Any]:
    """Comments of :post_id, oldest first, each with its author and (given a :viewer_id)
    whether the viewer follows that author: one statement whatever their number."""
    stmt = (
        select(
            comments.c.id,
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
        .order_by(comments.c.created_at, comments.c.id)
        .limit(MAX_COMMENTS)
    )
    if with_viewer:
        following = exists().where(
            follows.c.follower_id == bindparam("viewer_id", type_=BigInteger),
            follows.c.followee_id == comments.c.author_id,
        )
        stmt = stmt.add_columns(following.label("following"))
    return stmt


async def list_comments(*, db: Database, post_id: int, viewer_id: int | None) -> list[Row]:
    """Return a post's comments, oldest first, with their authors."""
    stmt = _comments_statement(viewer_id is not None)
    return list(await db.fetch_all(stmt, {"post_id": post_id, "viewer_id": viewer_id}))


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
