"""Posts created at once, each with tags that other requests are creating at the same time:
every post carries exactly its tags, and every tag's count of published posts is exact."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from fastpost.posts.models import PostCount, Tag
from tests.conftest import Factory
from tests.helpers import databases_of

POSTS = 60
NEW_TAGS = [f"fresh{i}" for i in range(4)]


def _tags_of(i: int) -> list[str]:
    # Overlapping sets of tags that no post carried before: their rows are made by these
    # requests, several at a time.
    return sorted({NEW_TAGS[i % 4], NEW_TAGS[(i + 1) % 4], f"own{i}"})


async def test_posts_created_at_once_with_new_tags_carry_exactly_their_tags(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    authors = await factory.users(10)
    responses = await asyncio.gather(
        *(
            client.post(
                "/posts/",
                json={"title": f"Post {i}", "content": "Body", "tags": _tags_of(i)},
                headers=authors[i % 10].headers,
            )
            for i in range(POSTS)
        )
    )

    assert [r.status_code for r in responses] == [201] * POSTS
    for i, response in enumerate(responses):
        created = response.json()
        assert created["tags"] == _tags_of(i)
        stored = (await client.get(f"/posts/{created['id']}")).json()
        assert stored["tags"] == _tags_of(i)
    # Summed over the databases: in sharded mode each counts the tags of its own posts.
    counts: Counter[str] = Counter()
    for db in databases_of(app):
        async with db.reader() as conn:
            counts.update(
                dict(
                    (
                        await conn.execute(
                            select(Tag.name, PostCount.n).join(
                                PostCount, (PostCount.kind == "t") & (PostCount.ref_id == Tag.id)
                            )
                        )
                    ).all()
                )
            )
    for name in NEW_TAGS:
        assert counts[name] == sum(name in _tags_of(i) for i in range(POSTS))
