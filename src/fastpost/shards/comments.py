"""Comments in sharded mode: a comment lives with its post (the post's database, numbered
from the post's logical shard's sequence); its author may live on another database, so the
author's name and image come from theirs."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Select,
    String,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.exc import IntegrityError

from fastpost.cache import Cache
from fastpost.comments import service as comments_service
from fastpost.comments.service import comments
from fastpost.errors import Forbidden, NotFound
from fastpost.ids import shard_of
from fastpost.pagination import Cursor, Page, cut_page
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.shards.merge import fetch_each
from fastpost.shards.posts import refuse_offset
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import SEQUENCES
from fastpost.shards.social import PROFILES
from fastpost.timeutil import utcnow
from fastpost.users import service as users_service
from fastpost.writes import Step, WriteProgram


@cache
def page_statement(with_viewer: bool, after_cursor: bool) -> Select[Any]:
    """The unsharded page (fastpost.comments.service), without the join to the authors."""
    stmt = select(*comments_service.COMMENT_COLUMNS).where(
        comments.c.post_id == bindparam("post_id", type_=BigInteger)
    )
    return comments_service.page_of_comments(stmt, with_viewer, (after_cursor, False))


def _cursor_of(row: Any) -> Cursor:
    return Cursor(row["created_at"], row["id"])


async def list_comments_page(
    *, shards: Shards, post_id: int, viewer_id: int | None, page: Page
) -> dict[str, Any]:
    """A page of a post's comments, oldest first: the post's database, then the authors'
    names from theirs (one statement per database)."""
    refuse_offset(page)
    db = shards.for_id(post_id)
    stmt = page_statement(viewer_id is not None, page.cursor is not None)
    rows = await db.fetch_all(stmt, {**page.params, "post_id": post_id, "viewer_id": viewer_id})
    if not rows:
        await posts_service.ensure_post_visible(db=db, viewer_id=viewer_id, post_id=post_id)
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    groups = shards.group_by_database({row["author_id"] for row in items})
    found = await fetch_each(
        [shards.databases[n] for n in groups],
        PROFILES,
        [{"user_ids": ids} for ids in groups.values()],
    )
    authors = {row["id"]: row for rows_of_db in found for row in rows_of_db}
    shown = []
    for row in items:
        author = authors.get(row["author_id"])
        if author is None:  # deleted since: their comments outlive them on other databases
            continue
        named = {**row, "author_username": author["username"], "author_image": author["image"]}
        shown.append(comments_service.comment_dict(named))
    return {"items": shown, "next_cursor": cursor}


_VISIBLE_POST = queries.visible_id_statement("id", True)
# The unsharded insert, numbered from the post's logical shard's sequence.
_INSERT_COMMENT = comments_service.INSERT_COMMENT.values(
    id=func.nextval(cast(bindparam("id_sequence", type_=String), REGCLASS))
)


def _add_steps(params: dict[str, Any]) -> WriteProgram[int]:
    if not (yield Step(_VISIBLE_POST, params)):
        raise NotFound("Post not found", code="post_not_found")
    (row,) = yield Step(_INSERT_COMMENT, params)
    return int(row[0])


async def add_comment(
    *, shards: Shards, cache: Cache, post_id: int, author_id: int, body: str
) -> dict[str, Any]:
    """Comment on a post as the caller, on the post's database. The caller's name and image
    come from their own cached profile (the entry the request's account check has just
    read), so the write touches the post's database alone."""
    me = orjson.loads(
        await users_service.cached_me(db=shards.for_id(author_id), cache=cache, user_id=author_id)
    )
    author = {"username": me["username"], "image": me["image"]}
    now = utcnow()
    params = {
        "post_id": post_id,
        "viewer_id": author_id,
        "body": body,
        "now": now,
        "id_sequence": SEQUENCES[shard_of(post_id)],
    }
    try:
        async with shards.writing_for(post_id) as db:
            comment_id = await db.write(_add_steps(params), atomic=False)
    except IntegrityError:
        raise NotFound("Post not found", code="post_not_found") from None
    return comments_service.comment_dict(
        {
            "id": comment_id,
            "post_id": post_id,
            "body": body,
            "created_at": now,
            "updated_at": now,
            "author_id": author_id,
            "author_username": author["username"],
            "author_image": author["image"],
        }
    )


_COMMENT_AUTHOR = select(comments.c.author_id).where(
    comments.c.id == bindparam("comment_id", type_=BigInteger),
    comments.c.post_id == bindparam("post_id", type_=BigInteger),
)


def _delete_steps(params: dict[str, Any]) -> WriteProgram[None]:
    if not (yield Step(_VISIBLE_POST, params)):
        raise NotFound("Post not found", code="post_not_found")
    rows = yield Step(_COMMENT_AUTHOR, params)
    if not rows:
        raise NotFound("Comment not found", code="comment_not_found", field="comment")
    if rows[0]["author_id"] != params["viewer_id"]:
        raise Forbidden("Only its author may delete a comment", code="not_author", field="comment")
    yield Step(comments_service.DELETE_COMMENT, params)


async def delete_comment(*, shards: Shards, post_id: int, comment_id: int, user_id: int) -> None:
    """Delete a comment of the post (its author only), on the post's database."""
    params = {"post_id": post_id, "comment_id": comment_id, "viewer_id": user_id}
    async with shards.writing_for(post_id) as db:
        await db.write(_delete_steps(params), atomic=False)
