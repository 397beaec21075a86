"""The /posts routes and /users/{id}/posts."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from fastpost.posts.models import Like
from fastpost.users.models import User
from tests.conftest import Factory, TestUser
from tests.helpers import database_of

# A fixed point in the past, so that posts made "now" by the API are always newer.
T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


async def create_post(
    client: httpx.AsyncClient, user: TestUser, path: str = "/posts/", **overrides: Any
) -> httpx.Response:
    body: dict[str, Any] = {"title": "On latency", "content": "Measure before you optimise."}
    body.update(overrides)
    return await client.post(path, json=body, headers=user.headers)


async def walk_pages(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> list[list[int]]:
    """Follow next_cursor from the first page to the last; return each page's item ids."""
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        response = await client.get(url, params=query, headers=headers or {})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "next_cursor never ran out"


def ids_of(response: httpx.Response) -> list[int]:
    body = response.json()
    items = body["items"] if isinstance(body, dict) else body
    return [item["id"] for item in items]


def error_fields(response: httpx.Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors") or []}


async def like_rows(app: FastAPI, post_id: int) -> int:
    async with database_of(app, post_id).reader() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(Like).where(Like.post_id == post_id)
        )
    return int(count or 0)


async def delete_account(app: FastAPI, user: TestUser) -> None:
    async with database_of(app, user.id).transaction() as session:
        await session.execute(delete(User).where(User.id == user.id))


# --- create ---------------------------------------------------------------------------


async def test_create_post_returns_201_with_the_author_embedded(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user("writer")
    response = await create_post(client, author)
    assert response.status_code == 201
    post = response.json()
    assert post["title"] == "On latency"
    assert post["content"] == "Measure before you optimise."
    assert post["status"] == "published"
    assert post["likes_count"] == 0
    assert post["liked_by_me"] is False
    assert post["author"] == {"id": author.id, "username": "writer", "image": None}
    assert post["created_at"].endswith("Z")
    assert post["created_at"] == post["updated_at"]
    # It is really there, not only echoed back.
    read = await client.get(f"/posts/{post['id']}")
    assert read.status_code == 200
    assert read.json()["title"] == "On latency"


@pytest.mark.parametrize("path", ["/posts", "/posts/"])
async def test_posts_collection_answers_with_and_without_trailing_slash_without_redirect(
    client: httpx.AsyncClient, factory: Factory, path: str
) -> None:
    author = await factory.user()
    created = await create_post(client, author, path=path)
    assert created.status_code == 201, created.text
    listed = await client.get(path)
    assert listed.status_code == 200
    assert ids_of(listed) == [created.json()["id"]]


async def test_create_post_can_save_a_draft(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    response = await create_post(client, author, status="draft")
    assert response.status_code == 201
    assert response.json()["status"] == "draft"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"content": ""}, "content"),
        ({"status": "archived"}, "status"),
        ({"title": None}, "title"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_create_post_rejects_bad_input_with_422_naming_the_field(
    client: httpx.AsyncClient, factory: Factory, overrides: dict[str, Any], field: str
) -> None:
    author = await factory.user()
    response = await create_post(client, author, **overrides)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert field in error_fields(response)


async def test_create_post_accepts_a_title_of_exactly_200_characters(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    response = await create_post(client, author, title="x" * 200)
    assert response.status_code == 201
    assert response.json()["title"] == "x" * 200


async def test_create_post_rejects_a_missing_field_with_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    response = await client.post("/posts/", json={"title": "only"}, headers=author.headers)
    assert response.status_code == 422
    assert error_fields(response) == {"content"}


@pytest.mark.parametrize("text", ["nul\x00byte", "\x00"])
async def test_create_and_update_refuse_text_with_a_nul_character_with_422(
    client: httpx.AsyncClient, factory: Factory, text: str
) -> None:
    # PostgreSQL cannot store U+0000 in text: it must be refused as input, not fail as a 500.
    author = await factory.user()
    post_id = await factory.post(author, title="Kept")
    for field in ("title", "content"):
        response = await create_post(client, author, **{field: text})
        assert response.status_code == 422, response.text
        assert field in error_fields(response)
        response = await client.patch(
            f"/posts/{post_id}", json={field: text}, headers=author.headers
        )
        assert response.status_code == 422, response.text
        assert field in error_fields(response)
    assert ids_of(await client.get("/posts/")) == [post_id]


async def test_create_post_with_the_token_of_a_deleted_account_is_401(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    gone = await factory.user()
    await delete_account(app, gone)
    response = await create_post(client, gone)
    assert response.status_code == 401
    assert response.json()["code"] == "account_gone"
    assert (await client.get("/posts/")).json()["items"] == []


async def test_create_post_requires_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/posts/", json={"title": "t", "content": "c"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/posts/")).json()["items"] == []


# --- read one -------------------------------------------------------------------------


async def test_read_post_returns_it_with_its_author(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user("reader_author")
    post_id = await factory.post(author, title="Hello", content="World", created_at=T0)
    response = await client.get(f"/posts/{post_id}")
    assert response.status_code == 200
    post = response.json()
    assert post["id"] == post_id
    assert (post["title"], post["content"], post["status"]) == ("Hello", "World", "published")
    assert post["author"]["username"] == "reader_author"
    assert post["created_at"] == "2024-05-17T12:30:45.123456Z"


async def test_read_unknown_post_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/posts/999999")
    assert response.status_code == 404
    assert response.json()["code"] == "post_not_found"


@pytest.mark.parametrize("post_id", ["abc", "0", "-1", "1.5", str(2**53), str(2**63)])
async def test_read_post_rejects_a_malformed_id_with_422(
    client: httpx.AsyncClient, post_id: str
) -> None:
    response = await client.get(f"/posts/{post_id}")
    assert response.status_code == 422
    assert error_fields(response) == {"post_id"}


async def test_read_post_accepts_the_largest_id_and_answers_404(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/posts/{2**53 - 1}")).status_code == 404


# --- drafts ---------------------------------------------------------------------------


async def test_a_draft_is_404_to_everyone_but_its_author(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    draft = await factory.post(author, status="draft")
    assert (await client.get(f"/posts/{draft}")).status_code == 404
    assert (await client.get(f"/posts/{draft}", headers=other.headers)).status_code == 404
    own = await client.get(f"/posts/{draft}", headers=author.headers)
    assert own.status_code == 200
    assert own.json()["status"] == "draft"


async def test_drafts_are_left_out_of_every_public_list(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.users(2)
    await factory.follow(reader, author)
    published = await factory.post(author, title="Visible words", content="searchable")
    draft = await factory.post(
        author, title="Secret words", content="searchable", status="draft", likes_count=5
    )
    for headers in ({}, reader.headers, author.headers):
        for url in (
            "/posts/",
            f"/posts/?author_id={author.id}",
            f"/users/{author.id}/posts",
            "/posts/popular",
            "/posts/search?q=searchable",
        ):
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, (url, response.text)
            assert ids_of(response) == [published], url
    feed = await client.get("/feed", headers=reader.headers)
    assert ids_of(feed) == [published]
    overview = (await client.get(f"/users/{author.id}/overview")).json()
    assert [p["id"] for p in overview["latest_posts"]] == [published]
    assert draft not in ids_of(await client.get("/posts/search?q=secret"))


async def test_author_lists_own_drafts_with_status_draft(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    older = await factory.post(author, status="draft", created_at=T0)
    newer = await factory.post(author, status="draft", created_at=T0 + timedelta(seconds=1))
    await factory.post(author)  # published: not a draft
    await factory.post(other, status="draft")  # someone else's
    response = await client.get("/posts/?status=draft", headers=author.headers)
    assert response.status_code == 200
    assert ids_of(response) == [newer, older]
    assert {p["status"] for p in response.json()["items"]} == {"draft"}
    # Naming oneself as the author changes nothing.
    mine = await client.get(f"/posts/?status=draft&author_id={author.id}", headers=author.headers)
    assert ids_of(mine) == [newer, older]


async def test_listing_drafts_anonymously_is_401(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    await factory.post(author, status="draft")
    response = await client.get("/posts/?status=draft")
    assert response.status_code == 401
    response = await client.get(f"/posts/?status=draft&author_id={author.id}")
    assert response.status_code == 401


async def test_listing_another_authors_drafts_is_403(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    await factory.post(author, status="draft")
    response = await client.get(
        f"/posts/?status=draft&author_id={author.id}", headers=other.headers
    )
    assert response.status_code == 403
    assert response.json()["code"] == "drafts_private"


async def test_listing_with_an_unknown_status_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/posts/?status=archived")
    assert response.status_code == 422
    assert error_fields(response) == {"status"}


# --- update ---------------------------------------------------------------------------


async def test_author_updates_a_post_and_updated_at_moves(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="Old", content="Body", created_at=T0)
    response = await client.patch(
        f"/posts/{post_id}", json={"title": "New"}, headers=author.headers
    )
    assert response.status_code == 200
    post = response.json()
    assert (post["title"], post["content"]) == ("New", "Body")
    assert post["created_at"] == "2024-05-17T12:30:45.123456Z"
    assert post["updated_at"] > post["created_at"]
    assert post["author"]["id"] == author.id
    again = (await client.get(f"/posts/{post_id}")).json()
    assert again["title"] == "New"
    assert again["updated_at"] == post["updated_at"]


async def test_author_publishes_a_draft_by_changing_its_status(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    draft = await factory.post(author, status="draft")
    response = await client.patch(
        f"/posts/{draft}", json={"status": "published"}, headers=author.headers
    )
    assert response.status_code == 200
    assert ids_of(await client.get("/posts/")) == [draft]


async def test_updating_someone_elses_post_is_403_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    post_id = await factory.post(author, title="Mine")
    response = await client.patch(f"/posts/{post_id}", json={"title": "X"}, headers=other.headers)
    assert response.status_code == 403
    assert response.json()["code"] == "not_author"
    assert (await client.get(f"/posts/{post_id}")).json()["title"] == "Mine"


async def test_updating_someone_elses_draft_is_404_like_any_hidden_post(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    draft = await factory.post(author, status="draft")
    response = await client.patch(f"/posts/{draft}", json={"title": "X"}, headers=other.headers)
    assert response.status_code == 404


async def test_updating_an_unknown_post_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    response = await client.patch("/posts/999999", json={"title": "X"}, headers=user.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "post_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": None},
        {"content": None},
        {"status": None},
        {"title": ""},
        {"title": "x" * 201},
        {"status": "archived"},
        {"likes_count": 1000},
    ],
)
async def test_update_rejects_empty_null_or_invalid_changes_with_422(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any]
) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="Kept")
    response = await client.patch(f"/posts/{post_id}", json=body, headers=author.headers)
    assert response.status_code == 422
    post = (await client.get(f"/posts/{post_id}")).json()
    assert (post["title"], post["likes_count"]) == ("Kept", 0)


async def test_update_requires_a_bearer_token(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    assert (await client.patch(f"/posts/{post_id}", json={"title": "X"})).status_code == 401


# --- delete ---------------------------------------------------------------------------


async def test_author_deletes_a_post_then_it_is_404_and_its_likes_are_gone(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author, fan1, fan2 = await factory.users(3)
    post_id = await factory.post(author)
    kept = await factory.post(author)
    for fan in (fan1, fan2):
        assert (await client.post(f"/posts/{post_id}/like", headers=fan.headers)).is_success
    await client.post(f"/posts/{kept}/like", headers=fan1.headers)
    assert await like_rows(app, post_id) == 2

    response = await client.delete(f"/posts/{post_id}", headers=author.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/posts/{post_id}")).status_code == 404
    assert await like_rows(app, post_id) == 0
    assert await like_rows(app, kept) == 1
    assert ids_of(await client.get("/posts/")) == [kept]
    again = await client.delete(f"/posts/{post_id}", headers=author.headers)
    assert again.status_code == 404


async def test_deleting_someone_elses_post_is_403_and_keeps_it(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    post_id = await factory.post(author)
    response = await client.delete(f"/posts/{post_id}", headers=other.headers)
    assert response.status_code == 403
    assert (await client.get(f"/posts/{post_id}")).status_code == 200


async def test_deleting_needs_a_token_and_an_existing_post(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    assert (await client.delete(f"/posts/{post_id}")).status_code == 401
    assert (await client.delete("/posts/999999", headers=author.headers)).status_code == 404


# --- listing and pagination -----------------------------------------------------------


async def test_list_posts_is_newest_first(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    middle = await factory.post(author, created_at=T0 + timedelta(minutes=1))
    oldest = await factory.post(author, created_at=T0)
    newest = await factory.post(author, created_at=T0 + timedelta(minutes=2))
    response = await client.get("/posts/")
    assert response.status_code == 200
    assert ids_of(response) == [newest, middle, oldest]
    assert response.json()["next_cursor"] is None


async def test_list_posts_returns_20_by_default_and_at_most_100(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    for i in range(101):
        await factory.post(author, created_at=T0 + timedelta(seconds=i))
    default = (await client.get("/posts/")).json()
    assert len(default["items"]) == 20
    assert default["next_cursor"] is not None
    largest = (await client.get("/posts/?limit=100")).json()
    assert len(largest["items"]) == 100
    assert largest["next_cursor"] is not None
    for limit in ("101", "0", "-1", "many"):
        response = await client.get(f"/posts/?limit={limit}")
        assert response.status_code == 422, limit
        assert error_fields(response) == {"limit"}


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
async def test_walking_next_cursor_visits_every_post_once_in_order_with_ties_broken_by_id(
    client: httpx.AsyncClient, factory: Factory, limit: int
) -> None:
    author = await factory.user()
    # Several posts share each timestamp, and are created in shuffled order so that id order
    # and time order disagree: only the (created_at, id) key keeps pages from overlapping.
    stamps = [T0 + timedelta(seconds=s) for s in (0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 5, 5)]
    random.Random(limit).shuffle(stamps)
    made = [(stamp, await factory.post(author, created_at=stamp)) for stamp in stamps]
    expected = [post_id for _, post_id in sorted(made, reverse=True)]

    pages = await walk_pages(client, "/posts/", limit=limit)
    assert [post_id for page in pages for post_id in page] == expected
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


@pytest.mark.parametrize(
    "stamp",
    [
        # Dates far from today: a cursor that carried its timestamp as a float would lose a
        # microsecond on these and skip or repeat the posts that share it.
        datetime(2004, 8, 5, 7, 27, 3, 674049, tzinfo=UTC),
        datetime(2004, 3, 13, 21, 50, 4, 55997, tzinfo=UTC),
        datetime(2038, 9, 29, 23, 29, 11, 727719, tzinfo=UTC),
        datetime(1987, 4, 24, 19, 18, 41, 615377, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    ],
)
async def test_next_cursor_keeps_its_timestamp_to_the_microsecond_for_any_date(
    client: httpx.AsyncClient, factory: Factory, stamp: datetime
) -> None:
    author = await factory.user()
    tied = [await factory.post(author, created_at=stamp) for _ in range(4)]
    newer = await factory.post(author, created_at=stamp + timedelta(microseconds=1))
    older = await factory.post(author, created_at=stamp - timedelta(microseconds=1))
    pages = await walk_pages(client, "/posts/", limit=1)
    assert [page[0] for page in pages] == [newer, *reversed(tied), older]


async def test_the_last_page_has_no_next_cursor(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    for i in range(4):
        await factory.post(author, created_at=T0 + timedelta(seconds=i))
    # Exactly a page's worth: no extra row came back, so there is no next page to promise.
    assert (await client.get("/posts/?limit=4")).json()["next_cursor"] is None
    first = (await client.get("/posts/?limit=3")).json()
    second = await client.get("/posts/", params={"limit": 3, "cursor": first["next_cursor"]})
    assert len(second.json()["items"]) == 1
    assert second.json()["next_cursor"] is None


async def test_an_empty_list_is_a_page_with_no_items(client: httpx.AsyncClient) -> None:
    response = await client.get("/posts/")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.unsharded(
    "offset paging of the native API is refused (422) in sharded mode, cursors only: "
    "tests/shards/test_lists.py"
)
async def test_offset_skips_that_many_posts(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    made = [await factory.post(author, created_at=T0 + timedelta(seconds=i)) for i in range(6)]
    newest_first = made[::-1]
    response = await client.get("/posts/?offset=2&limit=3")
    assert response.status_code == 200
    assert ids_of(response) == newest_first[2:5]
    # The cursor of an offset page continues where it ended.
    cursor = response.json()["next_cursor"]
    rest = await client.get("/posts/", params={"cursor": cursor})
    assert ids_of(rest) == newest_first[5:]
    assert ids_of(await client.get("/posts/?offset=10")) == []
    for offset in ("-1", "10001"):
        bad = await client.get(f"/posts/?offset={offset}")
        assert bad.status_code == 422
        assert error_fields(bad) == {"offset"}


async def test_cursor_and_offset_together_is_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    for i in range(3):
        await factory.post(author, created_at=T0 + timedelta(seconds=i))
    cursor = (await client.get("/posts/?limit=1")).json()["next_cursor"]
    response = await client.get("/posts/", params={"cursor": cursor, "offset": 1})
    assert response.status_code == 422
    assert response.json()["code"] == "cursor_and_offset"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "x" * 65,
        _b64(b"not:numbers"),
        _b64(b"1716000000000000"),
        _b64(b"99999999999999999999999:1"),
        # Well-formed, but the id could never be a row's: it must not reach the database.
        _b64(b"1716000000000000:99999999999999999999"),
        _b64(b"1716000000000000:" + str(2**63).encode()),
        _b64(b"\xff\xfe:1"),
    ],
)
async def test_a_garbage_cursor_is_422_naming_the_cursor(
    client: httpx.AsyncClient, factory: Factory, cursor: str
) -> None:
    author = await factory.user()
    await factory.post(author)
    response = await client.get("/posts/", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert error_fields(response) == {"cursor"}


async def test_author_id_filter_lists_one_authors_posts(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    alice, bob = await factory.users(2)
    a1 = await factory.post(alice, created_at=T0)
    await factory.post(bob, created_at=T0 + timedelta(seconds=1))
    a2 = await factory.post(alice, created_at=T0 + timedelta(seconds=2))
    response = await client.get(f"/posts/?author_id={alice.id}")
    assert ids_of(response) == [a2, a1]
    assert {p["author"]["id"] for p in response.json()["items"]} == {alice.id}
    assert (await client.get("/posts/?author_id=0")).status_code == 422


async def test_user_posts_lists_one_authors_published_posts_page_by_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    alice, bob = await factory.users(2)
    mine = [await factory.post(alice, created_at=T0 + timedelta(seconds=i)) for i in range(5)]
    await factory.post(alice, status="draft")
    await factory.post(bob)
    pages = await walk_pages(client, f"/users/{alice.id}/posts", limit=2)
    assert pages == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
    # Even the author sees published posts only here; drafts have their own list.
    own = await client.get(f"/users/{alice.id}/posts", headers=alice.headers)
    assert ids_of(own) == mine[::-1]
    assert (await client.get("/users/0/posts")).status_code == 422


# --- liked_by_me ----------------------------------------------------------------------


async def test_liked_by_me_is_null_for_anonymous_and_true_or_false_for_a_caller(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, fan, stranger = await factory.users(3)
    post_id = await factory.post(author, title="Likeable words")
    assert (await client.post(f"/posts/{post_id}/like", headers=fan.headers)).is_success
    for url in ("/posts/", f"/users/{author.id}/posts", "/posts/popular", "/posts/search?q=words"):
        items = {
            who: (await client.get(url, headers=headers)).json()
            for who, headers in (("anon", {}), ("fan", fan.headers), ("other", stranger.headers))
        }
        flags = {
            who: (body["items"] if isinstance(body, dict) else body)[0]["liked_by_me"]
            for who, body in items.items()
        }
        assert flags == {"anon": None, "fan": True, "other": False}, url
    detail = {
        who: (await client.get(f"/posts/{post_id}", headers=headers)).json()["liked_by_me"]
        for who, headers in (("anon", {}), ("fan", fan.headers), ("other", stranger.headers))
    }
    assert detail == {"anon": None, "fan": True, "other": False}


# --- likes ----------------------------------------------------------------------------


async def test_liking_counts_once_however_often_it_is_repeated(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author, fan = await factory.users(2)
    post_id = await factory.post(author)
    first = await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    assert first.status_code == 200
    assert first.json() == {"post_id": post_id, "liked": True, "likes_count": 1}
    second = await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    assert second.json() == {"post_id": post_id, "liked": True, "likes_count": 1}
    post = (await client.get(f"/posts/{post_id}", headers=fan.headers)).json()
    assert (post["likes_count"], post["liked_by_me"]) == (1, True)
    assert await like_rows(app, post_id) == 1


async def test_unliking_takes_the_like_back_and_is_idempotent(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    author, fan, other_fan = await factory.users(3)
    post_id = await factory.post(author)
    await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    await client.post(f"/posts/{post_id}/like", headers=other_fan.headers)
    first = await client.delete(f"/posts/{post_id}/like", headers=fan.headers)
    assert first.status_code == 200
    assert first.json() == {"post_id": post_id, "liked": False, "likes_count": 1}
    second = await client.delete(f"/posts/{post_id}/like", headers=fan.headers)
    assert second.json() == {"post_id": post_id, "liked": False, "likes_count": 1}
    last = await client.delete(f"/posts/{post_id}/like", headers=other_fan.headers)
    assert last.json()["likes_count"] == 0
    again = await client.delete(f"/posts/{post_id}/like", headers=other_fan.headers)
    assert again.json()["likes_count"] == 0  # never below zero
    assert await like_rows(app, post_id) == 0
    assert (await client.get(f"/posts/{post_id}")).json()["likes_count"] == 0


async def test_likes_from_different_users_add_up(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    fans = await factory.users(3)
    post_id = await factory.post(author)
    counts = [
        (await client.post(f"/posts/{post_id}/like", headers=fan.headers)).json()["likes_count"]
        for fan in fans
    ]
    assert counts == [1, 2, 3]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_liking_an_unknown_post_or_someone_elses_draft_is_404(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, method: str
) -> None:
    author, fan = await factory.users(2)
    draft = await factory.post(author, status="draft")
    for post_id in (999999, draft):
        response = await client.request(method, f"/posts/{post_id}/like", headers=fan.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "post_not_found"
    assert await like_rows(app, draft) == 0


async def test_an_author_may_like_their_own_draft(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    draft = await factory.post(author, status="draft")
    response = await client.post(f"/posts/{draft}/like", headers=author.headers)
    assert response.json() == {"post_id": draft, "liked": True, "likes_count": 1}


@pytest.mark.unsharded(
    "deletes the account behind the cache's back; unsharded the like's own statement finds "
    "it gone, sharded the like is written on the post's database, which cannot see it "
    "(fastpost.shards.posts._POST_FOR_LIKE): the account check refuses the token once the "
    "cached account goes, as tests/users/test_accounts.py shows"
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_liking_with_the_token_of_a_deleted_account_is_401(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, method: str
) -> None:
    author, gone = await factory.users(2)
    post_id = await factory.post(author)
    await delete_account(app, gone)
    response = await client.request(method, f"/posts/{post_id}/like", headers=gone.headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "account_gone"
    assert await like_rows(app, post_id) == 0
    assert (await client.get(f"/posts/{post_id}")).json()["likes_count"] == 0


async def test_liking_requires_a_bearer_token(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    assert (await client.post(f"/posts/{post_id}/like")).status_code == 401
    assert (await client.delete(f"/posts/{post_id}/like")).status_code == 401


# --- popular --------------------------------------------------------------------------


async def test_popular_posts_are_ordered_by_likes_count(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    fans = await factory.users(3)
    posts = {n: await factory.post(author, title=f"{n} likes") for n in (2, 0, 3, 1)}
    for n, post_id in posts.items():
        for fan in fans[:n]:
            await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    response = await client.get("/posts/popular")
    assert response.status_code == 200
    body = response.json()
    assert [p["likes_count"] for p in body] == [3, 2, 1, 0]
    assert [p["id"] for p in body] == [posts[3], posts[2], posts[1], posts[0]]
    top_two = await client.get("/posts/popular?limit=2")
    assert [p["id"] for p in top_two.json()] == [posts[3], posts[2]]
    assert (await client.get("/posts/popular?limit=101")).status_code == 422


# --- search ---------------------------------------------------------------------------


async def test_search_finds_posts_by_words_in_title_or_content(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    in_title = await factory.post(author, title="Tuning PostgreSQL", content="Some notes.")
    in_content = await factory.post(author, title="Notes", content="How we tune postgresql.")
    await factory.post(author, title="Gardening", content="Tomatoes and basil.")
    response = await client.get("/posts/search", params={"q": "postgresql"})
    assert response.status_code == 200
    assert set(ids_of(response)) == {in_title, in_content}
    # Every word must match.
    both = await client.get("/posts/search", params={"q": "tomatoes basil"})
    assert len(ids_of(both)) == 1
    assert ids_of(await client.get("/posts/search", params={"q": "tomatoes latency"})) == []
    assert ids_of(await client.get("/posts/search", params={"q": "unmentioned"})) == []


async def test_search_ranks_the_better_match_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    passing = await factory.post(
        author,
        title="A long walk",
        content="We walked through fields, woods and villages, and at one point a "
        "conversation turned briefly to caching before moving on to other topics entirely.",
    )
    focused = await factory.post(
        author, title="Caching", content="Caching, caching and more caching strategies."
    )
    response = await client.get("/posts/search", params={"q": "caching"})
    assert ids_of(response) == [focused, passing]


async def test_search_leaves_out_drafts(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    await factory.post(author, title="Hidden topic", status="draft")
    response = await client.get("/posts/search?q=hidden", headers=author.headers)
    assert response.status_code == 200
    assert response.json() == []


async def test_search_pages_with_limit_and_offset(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    for i in range(5):
        await factory.post(author, title=f"Benchmark {i}", content="benchmark")
    everything = ids_of(await client.get("/posts/search?q=benchmark"))
    assert len(everything) == 5
    page = await client.get("/posts/search?q=benchmark&limit=2&offset=2")
    assert ids_of(page) == everything[2:4]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "q"),
        ("?q=", "q"),
        (f"?q={'x' * 201}", "q"),
        ("?q=a&limit=0", "limit"),
        ("?q=a&limit=101", "limit"),
        ("?q=a&offset=-1", "offset"),
    ],
)
async def test_search_without_a_usable_query_is_422(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await client.get(f"/posts/search{query}")
    assert response.status_code == 422
    assert error_fields(response) == {field}


@pytest.mark.parametrize(
    "q",
    [
        '"',
        '"unbalanced',
        "*",
        "latency*",
        "NEAR(",
        "NEAR(latency tuning, 2)",
        ":",
        "title:latency",
        "content:",
        "-latency",
        "^latency",
        "latency AND",
        "OR",
        "NOT",
        "(",
        ")",
        "{",
        "'",
        "\\",
        "!",
        "&|<->",
        " ",
        "the",
    ],
)
async def test_search_treats_query_syntax_characters_as_plain_text(
    client: httpx.AsyncClient, factory: Factory, q: str
) -> None:
    author = await factory.user()
    await factory.post(author, title="Latency tuning", content="Tail latency matters.")
    response = await client.get("/posts/search", params={"q": q})
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


@pytest.mark.parametrize("q", ["latency\x00", "\x00"])
async def test_search_refuses_a_nul_character_with_422(
    client: httpx.AsyncClient, factory: Factory, q: str
) -> None:
    author = await factory.user()
    await factory.post(author, title="Latency tuning")
    response = await client.get("/posts/search", params={"q": q})
    assert response.status_code == 422, response.text
    assert error_fields(response) == {"q"}


async def test_search_still_finds_words_wrapped_in_syntax_characters(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="Latency tuning", content="Tail latency matters.")
    for q in ('"latency', "latency:", "(latency)", "latency*", "*latency*", "'latency'"):
        response = await client.get("/posts/search", params={"q": q})
        assert response.status_code == 200, q
        assert ids_of(response) == [post_id], q
