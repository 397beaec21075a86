"""The RealWorld home page (the anonymous, unfiltered first page of /api/articles) is served
from the cache, and every write that changes what it shows drops it."""

from __future__ import annotations

import httpx

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
