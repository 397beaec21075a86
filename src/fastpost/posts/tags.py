"""Tags of posts: reading them with the post, and the tags in use (writes set them: see
fastpost.posts.writes).

A tag row is shared by every post that carries it and made on first use; a post's tags are
its post_tags rows. How many published posts carry each tag is kept in post_counts by the
database (see migration 0002), so listing tags never counts post_tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from pydantic import StringConstraints
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    bindparam,
    exists,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

from fastpost import cache_keys
from fastpost.cache import Cache, Entry
from fastpost.db import Database, table_of
from fastpost.posts.models import Post, PostCount, PostTag, Tag
from fastpost.responses import dump_json

tags = table_of(Tag)
post_tags = table_of(PostTag)
post_counts = table_of(PostCount)
posts = table_of(Post)

# The column is String(64); a post carries few tags, and the bound keeps a post's row of
# post_tags (and its tag list in every page) small.
MAX_TAG_LENGTH = 64
MAX_TAGS = 20
# Control characters are refused: they are invisible in every client that shows tags.
TagName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH, pattern=r"^[^\x00-\x1f]+$")
]

# Every anonymous GET /tags/ and GET /api/tags reads the tags in use; writes that change
# which tags are in use, or how often, drop them (cache_keys.TAGS_IN_USE, dropped by
# posts.service.stale_after_post_write).
TAGS_TTL = 30.0


def normalise_tags(names: Sequence[str]) -> list[str]:
    """Distinct, stripped, non-empty tag names, sorted: the one order tags are shown in."""
    return sorted({name.strip() for name in names if name.strip()})


class tag_name_aggregate(GenericFunction[Any]):  # noqa: N801 (SQL functions are lower case)
    """The names of a group of tags as one value: a PostgreSQL array, or SQLite JSON text.

    One construct compiled per dialect, so that a statement using it is built once whatever
    the backend (statements are cached per shape, not per dialect)."""

    name = "tag_name_aggregate"
    inherit_cache = True


@compiles(tag_name_aggregate, "postgresql")
def _array_agg(element: tag_name_aggregate, compiler: Any, **kw: Any) -> str:
    return f"array_agg({compiler.process(element.clauses, **kw)})"


@compiles(tag_name_aggregate)
def _json_group_array(element: tag_name_aggregate, compiler: Any, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


def tag_names_of_post() -> ColumnElement[Any]:
    """A correlated subquery: the current posts row's tag names, in one value (see tag_list).

    Part of the post's own SELECT, so a page of any size reads its tags in that one
    statement; the post_tags primary key (post_id, tag_id) serves each lookup."""
    return (
        select(tag_name_aggregate(tags.c.name))
        .select_from(post_tags.join(tags, tags.c.id == post_tags.c.tag_id))
        .where(post_tags.c.post_id == posts.c.id)
        .scalar_subquery()
    )


def tag_list(value: Any) -> list[str]:
    """The tag names tag_names_of_post() read, sorted by code point (not by the database's
    collation, which differs between backends and locales)."""
    if not value:
        return []
    names = value if isinstance(value, list) else orjson.loads(value)
    return sorted(name for name in names if name is not None)


def tag_id_named() -> ColumnElement[Any]:
    """The id of the tag named :tag (a scalar subquery)."""
    return select(tags.c.id).where(tags.c.name == bindparam("tag", type_=String)).scalar_subquery()


def has_tag() -> ColumnElement[bool]:
    """The current posts row carries the tag named :tag (for counts; lists use tagged())."""
    return exists().where(post_tags.c.post_id == posts.c.id, post_tags.c.tag_id == tag_id_named())


# Its own name: the tag list of each post (tag_names_of_post) reads post_tags as well, and
# must not be correlated with this join.
_tagged = post_tags.alias("tagged")


def tagged(stmt: Select[Any]) -> tuple[Select[Any], ColumnElement[Any], ColumnElement[Any]]:
    """Keep the posts carrying the tag named :tag; return the statement and the columns to
    order it by, newest first: the tag's rows of ix_post_tags_tag_created (tag_id,
    created_at DESC, post_id DESC) in index order, a range read for any tag (migration
    0003), where a filter on posts would probe every post in date order for a rare one."""
    on = (_tagged.c.post_id == posts.c.id) & (_tagged.c.tag_id == tag_id_named())
    joined = stmt.join(_tagged, on)
    return joined, _tagged.c.created_at, _tagged.c.post_id


# Tags on at least one published post, the most used first (ties by name: a stable order).
_TAGS_IN_USE = (
    select(tags.c.name)
    .join(
        post_counts,
        (post_counts.c.kind == "t") & (post_counts.c.ref_id == tags.c.id),
    )
    .where(post_counts.c.n > 0)
    .order_by(post_counts.c.n.desc(), tags.c.name)
    .limit(bindparam("limit", type_=BigInteger))
)


async def list_tags(*, db: Database, limit: int = 1000) -> list[Any]:
    """Return the names of tags on published posts, most used first."""
    return [row["name"] for row in await db.fetch_all(_TAGS_IN_USE, {"limit": limit})]


async def cached_tags(*, db: Database, cache: Cache) -> Entry:
    """The tags in use as an anonymous caller sees them (a JSON array of names)."""

    async def load() -> Entry:
        return Entry.of(dump_json(await list_tags(db=db)))

    return await cache.get_or_load(
        cache_keys.tags_in_use(), load, ttl=TAGS_TTL, tags=[cache_keys.TAGS_IN_USE]
    )
