"""The RealWorld home page (the unfiltered first page of /api/articles), an article by slug
and the tags are served from the cache, revalidated by ETag for anonymous callers, with a
logged-in caller's own flags read fresh; every write that changes what they show drops
them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from fastpost.http_caching import CachedPostReads
from tests.conftest import Factory, TestUser, select_count
from tests.realworld.test_router import new_article, token_headers

HOME = "/api/articles?limit=10"


async def test_home_page_is_served_from_the_cache_without_queries_and_revalidates(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    author = await factory.user("jake")
    await new_article(client, author, tagList=["dragons"])
    first = await client.get(HOME)
    statements.clear()

    again = await client.get(HOME)
    revalidated = await client.get(HOME, headers={"If-None-Match": first.headers["etag"]})

    assert again.status_code == 200
    assert again.content == first.content
    assert select_count(statements) == 0
    assert revalidated.status_code == 304
    assert revalidated.content == b""


@pytest.mark.unsharded(
    "counts the statements of one database; sharded lists run one per database, which "
    "tests/shards/test_realworld.py and tests/shards/test_routing.py count"
)
async def test_a_logged_in_caller_or_a_filter_reads_the_database(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    author = await factory.user("jake")
    await new_article(client, author, tagList=["dragons"])
    await client.get(HOME)
    statements.clear()

    mine = await client.get(HOME, headers=token_headers(author))
    tagged = await client.get(HOME + "&tag=dragons")

    assert mine.status_code == tagged.status_code == 200
    assert "etag" not in mine.headers
    assert select_count(statements) == 2  # one statement each, the total inside it


async def _home(client: httpx.AsyncClient) -> dict[str, object]:
    response = await client.get(HOME)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def _first(home: dict[str, object]) -> dict[str, object]:
    articles = home["articles"]
    assert isinstance(articles, list)
    first: dict[str, object] = articles[0]
    return first


async def test_publishing_an_article_shows_it_first_with_the_new_total(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user("jake")
    await new_article(client, author, title="First")
    before = await _home(client)

    await new_article(client, author, title="Second")
    after = await _home(client)

    assert before["articlesCount"] == 1
    assert after["articlesCount"] == 2
    assert _first(after)["title"] == "Second"


async def test_favorites_edits_tags_and_deletes_show_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.user("jake"), await factory.user("ann")
    slug = (await new_article(client, author, tagList=["dragons"]))["slug"]
    await _home(client)

    await client.post(f"/api/articles/{slug}/favorite", headers=token_headers(reader))
    assert _first(await _home(client))["favoritesCount"] == 1

    await client.put(
        f"/api/articles/{slug}",
        json={"article": {"tagList": ["dragons", "training"]}},
        headers=token_headers(author),
    )
    assert _first(await _home(client))["tagList"] == ["dragons", "training"]

    await client.put(
        f"/api/articles/{slug}",
        json={"article": {"title": "Renamed"}},
        headers=token_headers(author),
    )
    assert _first(await _home(client))["title"] == "Renamed"

    await client.delete(f"/api/articles/{slug}", headers=token_headers(author))
    assert await _home(client) == {"articles": [], "articlesCount": 0}


async def test_an_author_editing_their_profile_changes_the_cached_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author: TestUser = await factory.user("jake")
    await new_article(client, author)
    await _home(client)

    await client.put(
        "/api/user", json={"user": {"bio": "I like to skateboard"}}, headers=token_headers(author)
    )

    assert _first(await _home(client))["author"] == {
        "username": "jake",
        "bio": "I like to skateboard",
        "image": None,
        "following": False,
    }


async def test_an_article_is_served_from_the_cache_without_queries_and_revalidates(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    author = await factory.user("jake")
    slug = (await new_article(client, author))["slug"]
    statements.clear()
    first = await client.get(f"/api/articles/{slug}")
    loaded = list(statements)
    statements.clear()

    again = await client.get(f"/api/articles/{slug}")
    revalidated = await client.get(
        f"/api/articles/{slug}", headers={"If-None-Match": first.headers["etag"]}
    )

    assert first.status_code == again.status_code == 200
    assert select_count(loaded) == 1
    assert statements == []
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert first.json()["article"]["body"] == "Very carefully."
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert revalidated.headers["etag"] == first.headers["etag"]


async def test_tags_are_served_from_the_cache_and_change_with_the_articles(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    author = await factory.user("jake")
    slug = (await new_article(client, author, tagList=["dragons"]))["slug"]
    first = await client.get("/api/tags")
    statements.clear()

    again = await client.get("/api/tags", headers=token_headers(author))
    revalidated = await client.get("/api/tags", headers={"If-None-Match": first.headers["etag"]})
    cached = list(statements)
    await new_article(client, author, tagList=["training"])
    created = (await client.get("/api/tags")).json()
    await client.put(
        f"/api/articles/{slug}", json={"article": {"tagList": []}}, headers=token_headers(author)
    )
    updated = (await client.get("/api/tags")).json()

    assert first.json() == again.json() == {"tags": ["dragons"]}
    assert cached == []
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert created == {"tags": ["dragons", "training"]}
    assert updated == {"tags": ["training"]}


async def _article(
    client: httpx.AsyncClient, slug: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.get(f"/api/articles/{slug}", headers=headers or {})
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


async def test_favorites_edits_profiles_and_deletes_show_at_once_in_the_cached_article(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.user("jake"), await factory.user("ann")
    slug = (await new_article(client, author))["slug"]
    await _article(client, slug)

    await client.post(f"/api/articles/{slug}/favorite", headers=token_headers(reader))
    assert (await _article(client, slug))["favoritesCount"] == 1

    await client.put(
        f"/api/articles/{slug}",
        json={"article": {"title": "Renamed", "tagList": ["dragons"]}},
        headers=token_headers(author),
    )
    renamed = await _article(client, slug)
    assert (renamed["title"], renamed["tagList"]) == ("Renamed", ["dragons"])

    await client.put("/api/user", json={"user": {"bio": "Rides"}}, headers=token_headers(author))
    assert (await _article(client, slug))["author"]["bio"] == "Rides"

    await client.delete(f"/api/articles/{slug}/favorite", headers=token_headers(reader))
    assert (await _article(client, slug))["favoritesCount"] == 0

    await client.delete(f"/api/articles/{slug}", headers=token_headers(author))
    assert (await client.get(f"/api/articles/{slug}")).status_code == 404


async def test_favorited_and_following_are_each_callers_own_from_one_cached_article(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    author, fan, other = [await factory.user(name) for name in ("jake", "ann", "bob")]
    slug = (await new_article(client, author))["slug"]
    await client.post(f"/api/articles/{slug}/favorite", headers=token_headers(fan))
    await client.post("/api/profiles/jake/follow", headers=token_headers(fan))
    anonymous = await _article(client, slug)
    statements.clear()

    fans = await _article(client, slug, token_headers(fan))
    fan_statements = list(statements)
    others = await _article(client, slug, token_headers(other))
    home = (await client.get(HOME, headers=token_headers(fan))).json()["articles"][0]

    def flags(article: dict[str, Any]) -> tuple[object, object, object]:
        return article["favorited"], article["author"]["following"], article["favoritesCount"]

    assert flags(anonymous) == (False, False, 1)
    assert flags(fans) == flags(home) == (True, True, 1)
    assert flags(others) == (False, False, 1)
    assert select_count(fan_statements) == len(fan_statements) == 1
    # Apart from the caller's flags, every caller sees the same article.
    assert {**fans, "favorited": False, "author": {**fans["author"], "following": False}} == (
        anonymous
    )


async def test_a_draft_is_shown_by_slug_to_its_author_only(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.user("jake"), await factory.user("ann")
    draft = await client.post(
        "/posts/", json={"title": "Unfinished", "content": "...", "status": "draft"},
        headers=author.headers,
    )  # fmt: skip
    slug = draft.json()["slug"]

    mine = await client.get(f"/api/articles/{slug}", headers=token_headers(author))
    theirs = await client.get(f"/api/articles/{slug}", headers=token_headers(other))
    anonymous = await client.get(f"/api/articles/{slug}")

    assert mine.status_code == 200
    assert mine.json()["article"]["title"] == "Unfinished"
    assert theirs.status_code == anonymous.status_code == 404


async def test_anonymous_articles_and_tags_are_answered_from_memory_before_routing(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user("jake")
    slug = (await new_article(client, author, tagList=["dragons"]))["slug"]
    routed: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        routed.append(scope["path"])
        await app(scope, receive, send)

    fast_path = CachedPostReads(router)

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app  # as Starlette sets it for its middleware
        await fast_path(scope, receive, send)

    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as outer:
        paths = [f"/api/articles/{slug}", "/api/tags"]
        cold = [await outer.get(path) for path in paths]  # routed, then cached
        warm = [await outer.get(path) for path in paths]
        revalidated = [
            await outer.get(path, headers={"If-None-Match": response.headers["etag"]})
            for path, response in zip(paths, cold, strict=True)
        ]
        assert routed == paths
        logged_in = await outer.get(paths[0], headers=token_headers(author))

    assert [r.content for r in warm] == [r.content for r in cold]
    # The same headers as the route's (the app's outer middleware, which adds request ids
    # and timings to both in a server, is not around this test's fast path).
    names = ("etag", "cache-control", "vary", "content-type", "content-length")
    assert [[r.headers[n] for n in names] for r in warm] == [
        [r.headers[n] for n in names] for r in cold
    ]
    assert [r.status_code for r in revalidated] == [304, 304]
    assert routed == [*paths, paths[0]]  # a logged-in caller is the route's to answer
    assert logged_in.json()["article"]["slug"] == slug
