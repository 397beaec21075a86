"""Tags of posts: setting a post's tags, and the list of tags in use.

A tag row is shared by every post that carries it and made on first use; a post's tags are
its post_tags rows. How many published posts carry each tag is kept in post_counts by the
database (see migration 0002), so listing tags never counts post_tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost.db import Database, insert_ignoring_conflicts, table_of
from fastpost.posts.models import PostCount, PostTag, Tag

tags = table_of(Tag)
post_tags = table_of(PostTag)
post_counts = table_of(PostCount)


def normalise_tags(names: Sequence[str]) -> list[str]:
    """Distinct, stripped, non-empty tag names, sorted: the one order tags are shown in."""
    return sorted({name.strip() for name in names if name.strip()})


async def set_post_tags(*, session: AsyncSession, post_id: int, names: Sequence[str]) -> None:
    """Make the post carry exactly these tags, creating the ones new to the site."""
    wanted = normalise_tags(names)
    if wanted:
        # Idempotent inserts: a concurrent request may create the same tag at the same time.
        await session.execute(
            insert_ignoring_conflicts(session, tags), [{"name": name} for name in wanted]
        )
        ids = (await session.execute(select(tags.c.id).where(tags.c.name.in_(wanted)))).scalars()
        wanted_ids = set(ids)
    else:
        wanted_ids = set()
    current = set(
        (
            await session.execute(select(post_tags.c.tag_id).where(post_tags.c.post_id == post_id))
        ).scalars()
    )
    if current - wanted_ids:
        await session.execute(
            post_tags.delete().where(
                post_tags.c.post_id == post_id, post_tags.c.tag_id.in_(current - wanted_ids)
            )
        )
    if wanted_ids - current:
        await session.execute(
            post_tags.insert(),
            [{"post_id": post_id, "tag_id": tag_id} for tag_id in sorted(wanted_ids - current)],
        )


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
