"""The posts domain's writes as write programs (fastpost.writes): compiled Core statements,
as few round trips as each write needs, and the response built from what was written.

Statements differ by dialect where one backend can do in one statement what the other
needs several for: PostgreSQL inserts a post, links its tags and reads its author back in
one statement (data-modifying CTEs); SQLite runs the same steps one by one, in its writer
thread, where a statement costs no round trip. Each is built once per dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    DateTime,
    Select,
    String,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.sql import ClauseElement, Insert

from fastpost.db import table_of
from fastpost.posts.models import Post, PostTag, Tag
from fastpost.users.models import User
from fastpost.writes import Step, WriteProgram

posts = table_of(Post)
tags = table_of(Tag)
post_tags = table_of(PostTag)
users = table_of(User)


def _names(dialect: str) -> Select[Any]:
    """The rows of the :names list parameter, one name each (see names_param)."""
    if dialect == "postgresql":
        return select(func.unnest(bindparam("names", type_=postgresql.ARRAY(String))))
    return select(literal_column("value")).select_from(
        func.json_each(bindparam("names", type_=String))
    )


def names_param(dialect: str, names: Sequence[str]) -> Any:
    """A list of names as the :names parameter: an array, or JSON text for SQLite."""
    return list(names) if dialect == "postgresql" else orjson.dumps(list(names)).decode()


@cache
def insert_tags(dialect: str) -> ClauseElement:
    """INSERT the :names that are not tags yet, in one statement whatever their number."""
    if dialect == "postgresql":
        return (
            postgresql.insert(tags).from_select(["name"], _names(dialect)).on_conflict_do_nothing()
        )
    # SQLite needs a WHERE after INSERT ... SELECT ... FROM before ON CONFLICT, or it reads
    # ON as the start of a join constraint (sqlite.org/lang_upsert.html, "parsing ambiguity").
    return (
        sqlite.insert(tags)
        .from_select(["name"], _names(dialect).where(true()))
        .on_conflict_do_nothing()
    )


_NEW_POST_COLUMNS = (
    "author_id",
    "title",
    "slug",
    "description",
    "content",
    "status",
    "likes_count",
    "created_at",
    "updated_at",
)


def _insert_post(sharded: bool = False) -> Insert:
    values: dict[str, Any] = {
        name: bindparam(name, type_=posts.c[name].type) for name in _NEW_POST_COLUMNS
    }
    if sharded:
        # The id from the post's logical shard's sequence (fastpost.shards), named by
        # :id_sequence, on whichever database hosts that shard.
        values["id"] = func.nextval(cast(bindparam("id_sequence", type_=String), REGCLASS))
    return insert(posts).values(values)


def _link_tags(dialect: str, post_id: Any, created_at: Any) -> Any:
    # With the post's created_at, so that a tag's posts are read newest first from one index.
    return insert(post_tags).from_select(
        ["post_id", "tag_id", "created_at"],
        select(post_id, tags.c.id, created_at).where(tags.c.name.in_(_names(dialect))),
    )


@cache
def create_post_statement(dialect: str, with_tags: bool, sharded: bool = False) -> ClauseElement:
    """PostgreSQL: INSERT the post, link its tags and return its id with its author's
    username, image and bio, in one statement. SQLite: INSERT the post, returning its id.
    `sharded` (PostgreSQL): the id comes from the sequence named :id_sequence."""
    if dialect != "postgresql":
        return _insert_post().returning(posts.c.id)
    new_post = (
        _insert_post(sharded)
        .returning(posts.c.id, posts.c.author_id, posts.c.created_at)
        .cte("new_post")
    )
    stmt = select(new_post.c.id, users.c.username, users.c.image, users.c.bio).join_from(
        new_post, users, users.c.id == new_post.c.author_id
    )
    if with_tags:
        # A data-modifying CTE runs to completion whether or not the SELECT reads it.
        linked = _link_tags(dialect, new_post.c.id, new_post.c.created_at).cte("linked")
        stmt = stmt.add_cte(linked)
    statement: ClauseElement = stmt
    return statement


_SQLITE_LINK_TAGS = _link_tags(
    "sqlite",
    bindparam("post_id", type_=BigInteger),
    bindparam("created_at", type_=DateTime(timezone=True)),
)
_AUTHOR = select(users.c.username, users.c.image, users.c.bio).where(
    users.c.id == bindparam("author_id", type_=BigInteger)
)


def create_post(
    dialect: str, values: dict[str, Any], names: Sequence[str], *, sharded: bool = False
) -> WriteProgram[tuple[int, Any]]:
    """Insert a post (`values`: its columns) carrying the tags `names` (normalised); return
    its id and its author's username, image and bio. `sharded`: `values` names the sequence
    of the post's logical shard as id_sequence (PostgreSQL)."""
    if names:
        # On PostgreSQL a statement of its own, committed before the post's: a tag that a
        # concurrent request is creating is then visible to the next statement, which
        # links it. Idempotent, so it may commit alone (an unused tag is listed nowhere).
        yield Step(insert_tags(dialect), {"names": names_param(dialect, names)})
    if dialect == "postgresql":
        params = {**values, "names": names_param(dialect, names)} if names else values
        rows = yield Step(create_post_statement(dialect, bool(names), sharded), params)
        return rows[0][0], rows[0][1:]
    rows = yield Step(create_post_statement(dialect, False), values)
    post_id: int = rows[0][0]
    if names:
        params = {"post_id": post_id, "created_at": values["created_at"]}
        yield Step(_SQLITE_LINK_TAGS, {**params, "names": names_param(dialect, names)})
    (author,) = yield Step(_AUTHOR, {"author_id": values["author_id"]})
    return post_id, tuple(author)


def new_post_values(
    *,
    author_id: int,
    title: str,
    slug: str,
    description: str,
    content: str,
    status: str,
    now: datetime,
) -> dict[str, Any]:
    """The parameters of create_post_statement."""
    return {
        "author_id": author_id,
        "title": title,
        "slug": slug,
        "description": description,
        "content": content,
        "status": status,
        "likes_count": 0,
        "created_at": now,
        "updated_at": now,
    }


_POST_ID = bindparam("post_id", type_=BigInteger)
# The row a change is checked against (locked) is the read model's: posts.queries.post_for_write.


@cache
def update_post_statement(columns: tuple[str, ...]) -> ClauseElement:
    """UPDATE these columns of a post (from :new_<column>) and its updated_at (:now)."""
    values: dict[str, Any] = {
        name: bindparam(f"new_{name}", type_=posts.c[name].type) for name in columns
    }
    values["updated_at"] = bindparam("now", type_=posts.c.updated_at.type)
    return posts.update().where(posts.c.id == _POST_ID).values(values)


@cache
def untag_post(dialect: str) -> ClauseElement:
    """DELETE the post's tags that are not among :names."""
    wanted = select(tags.c.id).where(tags.c.name.in_(_names(dialect)))
    return post_tags.delete().where(
        post_tags.c.post_id == _POST_ID, post_tags.c.tag_id.not_in(wanted)
    )


@cache
def tag_post(dialect: str) -> ClauseElement:
    """INSERT the :names the post does not carry yet (the tags exist: see insert_tags)."""
    created_at = select(posts.c.created_at).where(posts.c.id == _POST_ID).scalar_subquery()
    carried = select(post_tags.c.tag_id).where(post_tags.c.post_id == _POST_ID)
    return insert(post_tags).from_select(
        ["post_id", "tag_id", "created_at"],
        select(_POST_ID, tags.c.id, created_at).where(
            tags.c.name.in_(_names(dialect)), tags.c.id.not_in(carried)
        ),
    )


def set_tags(dialect: str, post_id: int, names: Sequence[str]) -> WriteProgram[None]:
    """Make the post carry exactly the tags `names` (normalised), in three statements
    whatever their number."""
    params = {"post_id": post_id, "names": names_param(dialect, names)}
    if names:
        # Before the statements that read them: on PostgreSQL each statement sees what
        # others committed before it started, a tag made concurrently included.
        yield Step(insert_tags(dialect), params)
    yield Step(untag_post(dialect), params)
    if names:
        yield Step(tag_post(dialect), params)
