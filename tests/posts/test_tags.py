"""Tags on native posts: set on create and edit, shown in every post and list, filtered by,
and listed at /tags/, with the caches following every change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Factory, TestUser
from tests.posts.test_router import create_post, error_fields, ids_of, walk_pages


async def tagged_post(
    client: httpx.AsyncClient, user: TestUser, tags: list[str], **overrides: Any
) -> dict[str, Any]:
    response = await create_post(client, user, tags=tags, **overrides)
    assert response.status_code == 201, response.text
    post: dict[str, Any] = response.json()
    return post


async def tags_of(client: httpx.AsyncClient, post_id: int, **headers: str) -> list[str]:
    response = await client.get(f"/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    tags: list[str] = response.json()["tags"]
    return tags


async def patch(
    client: httpx.AsyncClient, user: TestUser, post_id: int, **body: Any
) -> httpx.Response:
    return await client.patch(f"/posts/{post_id}", headers=user.headers, json=body)


# --- writing tags ------------------------------------------------------------------------


async def test_create_post_stores_tags_stripped_distinct_and_sorted(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post = await tagged_post(client, author, [" rust", "Python", "rust ", "async"])
    assert post["tags"] == ["Python", "async", "rust"]
    assert await tags_of(client, post["id"]) == ["Python", "async", "rust"]


async def test_a_post_created_without_tags_has_an_empty_list(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    created = await create_post(client, author)
    assert created.json()["tags"] == []
    assert await tags_of(client, created.json()["id"]) == []


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        (["x"] * 21, "tags"),
        (["x" * 65], "tags.0"),
        (["ok", "   "], "tags.1"),
        (["tab\there"], "tags.0"),
        (["nul\x00"], "tags.0"),
        ("python", "tags"),
        ([1], "tags.0"),
        (None, "tags"),
    ],
)
async def test_bad_tags_are_refused_with_422_naming_the_field(
    client: httpx.AsyncClient, factory: Factory, tags: Any, field: str
) -> None:
    author = await factory.user()
    created = await create_post(client, author, tags=tags)
    assert created.status_code == 422
    assert created.json()["code"] == "validation_error"
    assert field in error_fields(created)
    post_id = (await create_post(client, author)).json()["id"]
    patched = await patch(client, author, post_id, tags=tags)
    assert patched.status_code == 422
    if tags is None:
        # PATCH refuses null for any field in one check over the whole body.
        assert "tags cannot be null" in patched.json()["errors"][0]["message"]
    else:
        assert field in error_fields(patched)
    assert await tags_of(client, post_id) == []


async def test_twenty_tags_of_64_characters_are_accepted(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    names = [f"{i:02d}" + "x" * 62 for i in range(20)]
    post = await tagged_post(client, author, names)
    assert post["tags"] == names


async def test_patch_without_tags_keeps_them_a_list_replaces_them_and_empty_clears(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = (await tagged_post(client, author, ["a", "b"]))["id"]

    kept = await patch(client, author, post_id, title="Renamed")
    assert kept.status_code == 200
    assert kept.json()["tags"] == ["a", "b"]
    replaced = await patch(client, author, post_id, tags=["c", "a"])
    assert replaced.json()["tags"] == ["a", "c"]
    assert await tags_of(client, post_id) == ["a", "c"]
    cleared = await patch(client, author, post_id, tags=[])
    assert cleared.json()["tags"] == []
    assert await tags_of(client, post_id) == []


async def test_only_the_author_may_change_tags(client: httpx.AsyncClient, factory: Factory) -> None:
    author, other = await factory.users(2)
    post_id = (await tagged_post(client, author, ["mine"]))["id"]
    assert (await patch(client, other, post_id, tags=["theirs"])).status_code == 403
    assert (await client.patch(f"/posts/{post_id}", json={"tags": []})).status_code == 401
    assert (await patch(client, author, 987654, tags=["x"])).status_code == 404
    assert await tags_of(client, post_id) == ["mine"]


# --- reading tags in every list ----------------------------------------------------------


async def test_every_post_list_shows_each_posts_tags(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.users(2)
    await factory.follow(reader, author)
    post = await tagged_post(client, author, ["zebra", "alpha"], title="Zebra stripes")
    await client.post(f"/posts/{post['id']}/like", headers=reader.headers)
    lists = {
        "/posts/": "items",
        f"/users/{author.id}/posts": "items",
        "/posts/popular": None,
        "/posts/search?q=zebra": None,
        "/feed": "items",
        "/posts/?tag=zebra": "items",
    }
    for url, key in lists.items():
        for headers in ({}, reader.headers):
            if url == "/feed" and not headers:
                continue
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, (url, response.text)
            body = response.json()
            items = body[key] if key else body
            assert [(item["id"], item["tags"]) for item in items] == [
                (post["id"], ["alpha", "zebra"])
            ], url
    overview = (await client.get(f"/users/{author.id}/overview")).json()
    assert overview["latest_posts"][0]["tags"] == ["alpha", "zebra"]


# --- filtering by tag --------------------------------------------------------------------


async def test_filter_by_tag_walks_every_tagged_post_newest_first_by_cursor(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    tagged = []
    for i in range(7):
        tagged.append(
            (await tagged_post(client, author if i % 2 else other, ["go", f"n{i}"]))["id"]
        )
        await tagged_post(client, author, ["rust"])
    await create_post(client, author)
    pages = await walk_pages(client, "/posts/", tag="go", limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [post_id for page in pages for post_id in page] == tagged[::-1]
    # Logged in (no cache) the pages are the same.
    assert await walk_pages(client, "/posts/", headers=author.headers, tag="go", limit=3) == pages


async def test_filter_by_tag_combines_with_author_and_leaves_drafts_out(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    mine = (await tagged_post(client, author, ["go"]))["id"]
    theirs = (await tagged_post(client, other, ["go"]))["id"]
    draft = (await tagged_post(client, author, ["go"], status="draft"))["id"]
    assert ids_of(await client.get("/posts/", params={"tag": "go"})) == [theirs, mine]
    by_author = await client.get("/posts/", params={"tag": "go", "author_id": author.id})
    assert ids_of(by_author) == [mine]
    drafts = await client.get(
        "/posts/", params={"tag": "go", "status": "draft"}, headers=author.headers
    )
    assert ids_of(drafts) == [draft]


async def test_filter_by_an_unknown_tag_is_an_empty_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    await tagged_post(client, author, ["go"])
    for tag in ("nothing", "Go", "g"):
        response = await client.get("/posts/", params={"tag": tag})
        assert response.json() == {"items": [], "next_cursor": None}, tag


@pytest.mark.parametrize("tag", ["", "x" * 65, "nul\x00"])
async def test_a_bad_tag_filter_is_a_422_naming_tag(
    client: httpx.AsyncClient, factory: Factory, tag: str
) -> None:
    response = await client.get("/posts/", params={"tag": tag})
    assert response.status_code == 422
    assert error_fields(response) == {"tag"}


# --- /tags/ ------------------------------------------------------------------------------


async def test_tags_lists_tags_of_published_posts_most_used_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    for path in ("/tags/", "/tags"):
        assert (await client.get(path)).json() == []
    await tagged_post(client, author, ["b", "a"])
    await tagged_post(client, author, ["b", "c"])
    await tagged_post(client, author, ["hidden"], status="draft")
    for path in ("/tags/", "/tags"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == ["b", "a", "c"]
    assert (await client.get("/tags/", headers=author.headers)).json() == ["b", "a", "c"]


async def test_tags_follow_edits_publishing_and_deletes_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    first = (await tagged_post(client, author, ["a"]))["id"]
    draft = (await tagged_post(client, author, ["b"], status="draft"))["id"]
    before = await client.get("/tags/")
    assert before.json() == ["a"]

    await patch(client, author, first, tags=["a", "c"])
    after = await client.get("/tags/")
    assert after.json() == ["a", "c"]
    assert after.headers["etag"] != before.headers["etag"]
    await patch(client, author, draft, status="published")
    assert (await client.get("/tags/")).json() == ["a", "b", "c"]
    await patch(client, author, draft, status="draft")
    assert (await client.get("/tags/")).json() == ["a", "c"]
    await client.delete(f"/posts/{first}", headers=author.headers)
    assert (await client.get("/tags/")).json() == []


async def test_tags_answer_304_to_a_current_etag(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    await tagged_post(client, author, ["a"])
    first = await client.get("/tags/")
    assert first.headers["cache-control"].startswith("public")
    again = await client.get("/tags/", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["etag"] == first.headers["etag"]


# --- caches ------------------------------------------------------------------------------


async def test_a_tag_edit_reaches_the_cached_post_its_etag_and_the_cached_lists(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = (await tagged_post(client, author, ["old"]))["id"]
    before = await client.get(f"/posts/{post_id}")
    # Warm every cached list that shows the post.
    for url in ("/posts/", f"/users/{author.id}/posts", "/posts/popular", "/posts/?tag=old"):
        assert (await client.get(url)).status_code == 200

    edited = await patch(client, author, post_id, tags=["new"])
    assert edited.status_code == 200
    after = await client.get(f"/posts/{post_id}")
    assert after.json()["tags"] == ["new"]
    assert after.headers["etag"] != before.headers["etag"]
    assert edited.headers["etag"] == after.headers["etag"]
    stale = await client.get(f"/posts/{post_id}", headers={"If-None-Match": before.headers["etag"]})
    assert stale.status_code == 200
    assert (await client.get("/posts/")).json()["items"][0]["tags"] == ["new"]
    assert (await client.get(f"/users/{author.id}/posts")).json()["items"][0]["tags"] == ["new"]
    assert (await client.get("/posts/popular")).json()[0]["tags"] == ["new"]
    assert ids_of(await client.get("/posts/?tag=old")) == []
    assert ids_of(await client.get("/posts/?tag=new")) == [post_id]


async def test_a_tag_edit_through_the_realworld_api_reaches_the_native_caches(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post = await tagged_post(client, author, ["old"])
    before = await client.get(f"/posts/{post['id']}")
    assert (await client.get("/tags/")).json() == ["old"]
    # A change of tags alone: no title, body or description.
    token = author.headers["Authorization"].split()[1]
    updated = await client.put(
        f"/api/articles/{post['slug']}",
        headers={"Authorization": f"Token {token}"},
        json={"article": {"tagList": ["new"]}},
    )
    assert updated.status_code == 200, updated.text
    after = await client.get(f"/posts/{post['id']}")
    assert after.json()["tags"] == ["new"]
    assert after.headers["etag"] != before.headers["etag"]
    assert (await client.get("/tags/")).json() == ["new"]


async def test_cached_tag_pages_are_keyed_by_tag(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    a = (await tagged_post(client, author, ["a"]))["id"]
    b = (await tagged_post(client, author, ["a:b"]))["id"]
    assert ids_of(await client.get("/posts/?tag=a")) == [a]
    assert ids_of(await client.get("/posts/?tag=a:b")) == [b]
    assert ids_of(await client.get("/posts/")) == [b, a]
    c = (await tagged_post(client, author, ["a"]))["id"]
    assert ids_of(await client.get("/posts/?tag=a")) == [c, a]
