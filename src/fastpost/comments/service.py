"""What the comments domain does: comment on a post, list a post's comments, delete one."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, bindparam, exists, insert, select, tuple_
from sqlalchemy.exc import IntegrityError

from fastpost.comments.models import Comment
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound, Unauthorized
from fastpost.pagination import Cursor, Page, cut_page
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.posts.queries import PostRef
from fastpost.social.models import Follow
from fastpost.timeutil import utcnow
from fastpost.users.models import User
from fastpost.writes import Step, WriteProgram

comments = table_of(Comment)
users = table_of(User)
follows = table_of(Follow)
posts = queries.posts

# A post's comments are few next to its readers; this bounds a response all the same.
MAX_COMMENTS = 500


# A comment's own columns, without its author's name: that may live elsewhere (sharded mode).
COMMENT_COLUMNS = (
    comments.c.id,
    comments.c.post_id,
    comments.c.body,
    comments.c.created_at,
    comments.c.updated_at,
    comments.c.author_id,
)


def _select_comments(*, with_viewer: bool) -> Select[Any]:
    """Comments of :post_id, each with its author and (given a :viewer_id) whether the viewer
    follows that author: one statement whatever their number."""
    stmt = (
        select(
            *COMMENT_COLUMNS,
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
    return page_of_comments(_select_comments(with_viewer=False), with_viewer, shape)


def page_of_comments(stmt: Select[Any], with_viewer: bool, shape: tuple[bool, bool]) -> Select[Any]:
    """`stmt` (comments of :post_id) cut to a page, oldest first, of a post the caller may
    see: after a cursor or at an offset (shape: pagination.Page.shape)."""
    after_cursor, with_offset = shape
    # Joined to the post to see it is visible: a draft's comments are its author's alone.
    stmt = stmt.join(posts, posts.c.id == comments.c.post_id).where(
        queries.visible(with_viewer=with_viewer)
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


# Writes are write programs (fastpost.writes) that find the post by id or slug with the read
# model's visibility rule, in the statement that also checks the caller, and answer from
# what they wrote: a comment is two statements, whichever API asks.


@cache
def _comment_target(key: queries.Key) -> Select[Any]:
    """The post's id if :viewer_id may see it (NULL otherwise), and :viewer_id's own
    username, bio and image (no row when the account is gone: a token can outlive it)."""
    post_id = (
        select(posts.c.id)
        .where(queries.by_key(key), queries.visible(with_viewer=True))
        .scalar_subquery()
    )
    return select(post_id.label("post_id"), users.c.username, users.c.bio, users.c.image).where(
        users.c.id == queries.VIEWER
    )


INSERT_COMMENT = (
    insert(comments)
    .values(
        post_id=bindparam("post_id", type_=BigInteger),
        author_id=bindparam("viewer_id", type_=BigInteger),
        body=bindparam("body", type_=comments.c.body.type),
        created_at=bindparam("now", type_=comments.c.created_at.type),
        updated_at=bindparam("now", type_=comments.c.updated_at.type),
    )
    .returning(comments.c.id)
)


def add_comment_steps(
    *, post: PostRef, author_id: int, body: str, now: datetime
) -> WriteProgram[dict[str, Any]]:
    """Comment on a post by id or slug (a write program); return the comment with its
    author, as the reads give it."""
    rows = yield Step(_comment_target(post.key), {**post.params, "viewer_id": author_id})
    if not rows:
        raise Unauthorized("Account no longer exists", code="account_gone")
    target = rows[0]
    if target["post_id"] is None:
        raise NotFound("Post not found", code="post_not_found")
    post_id = int(target["post_id"])
    params = {"post_id": post_id, "viewer_id": author_id, "body": body, "now": now}
    (row,) = yield Step(INSERT_COMMENT, params)
    return {
        "id": row[0],
        "post_id": post_id,
        "body": body,
        "created_at": now,
        "updated_at": now,
        "author_id": author_id,
        "author_username": target["username"],
        "author_bio": target["bio"],
        "author_image": target["image"],
    }


async def add_comment(*, db: Database, post: PostRef, author_id: int, body: str) -> dict[str, Any]:
    """Comment on a post as the caller; return the comment with its author."""
    try:
        # atomic=False (PostgreSQL): the look-up and the INSERT each in autocommit, two round
        # trips; a post deleted in between fails the INSERT on its foreign key.
        return await db.write(
            add_comment_steps(post=post, author_id=author_id, body=body, now=utcnow()),
            atomic=False,
        )
    except IntegrityError:
        # The post went away meanwhile (or the account did).
        raise NotFound("Post not found", code="post_not_found") from None


@cache
def _comment_for_delete(key: queries.Key) -> Select[Any]:
    """The post's id if :viewer_id may see it, the author of its comment :comment_id, and
    whether :viewer_id's account exists, in one row."""
    post_id = (
        select(posts.c.id)
        .where(queries.by_key(key), queries.visible(with_viewer=True))
        .scalar_subquery()
    )
    author_id = (
        select(comments.c.author_id)
        .where(
            comments.c.id == bindparam("comment_id", type_=BigInteger),
            comments.c.post_id == post_id,
        )
        .scalar_subquery()
    )
    account = select(users.c.id).where(users.c.id == queries.VIEWER).exists()
    return select(post_id.label("post_id"), author_id.label("author_id"), account.label("account"))


DELETE_COMMENT = comments.delete().where(comments.c.id == bindparam("comment_id", type_=BigInteger))


def delete_comment_steps(*, post: PostRef, comment_id: int, user_id: int) -> WriteProgram[None]:
    """Delete a comment of a post by id or slug; only its author may (a write program)."""
    params = {**post.params, "comment_id": comment_id, "viewer_id": user_id}
    (row,) = yield Step(_comment_for_delete(post.key), params)
    if not row["account"]:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if row["post_id"] is None:
        raise NotFound("Post not found", code="post_not_found")
    if row["author_id"] is None:
        raise NotFound("Comment not found", code="comment_not_found", field="comment")
    if row["author_id"] != user_id:
        raise Forbidden("Only its author may delete a comment", code="not_author", field="comment")
    yield Step(DELETE_COMMENT, params)


async def delete_comment(*, db: Database, post: PostRef, comment_id: int, user_id: int) -> None:
    """Delete a comment of the post; only its author may."""
    # atomic=False: a comment deleted between the check and the DELETE is deleted all the
    # same (the DELETE then finds nothing); its author never changes.
    await db.write(
        delete_comment_steps(post=post, comment_id=comment_id, user_id=user_id), atomic=False
    )
