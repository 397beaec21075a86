"""Comments on native posts: /posts/{post_id}/comments."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Factory, TestUser
from tests.posts.test_router import error_fields, walk_pages

MISSING = 987654321


async def comment(
    client: httpx.AsyncClient, user: TestUser, post_id: int, body: str = "Well measured."
) -> dict[str, Any]:
    response = await client.post(
        f"/posts/{post_id}/comments", headers=user.headers, json={"body": body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- create ------------------------------------------------------------------------------


async def test_comment_answers_201_with_the_author_embedded(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.user(), await factory.user("reader")
    post_id = await factory.post(author)
    created = await comment(client, reader, post_id, "  Nice numbers.  ")
    assert created["post_id"] == post_id
    assert created["body"] == "Nice numbers."
    assert created["author"] == {"id": reader.id, "username": "reader", "image": None}
    assert created["created_at"].endswith("Z")
    assert created["created_at"] == created["updated_at"]
    listed = (await client.get(f"/posts/{post_id}/comments")).json()
    assert listed == {"items": [created], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"body": ""}, "body"),
        ({"body": "   "}, "body"),
        ({"body": "x" * 10_001}, "body"),
        ({"body": None}, "body"),
        ({}, "body"),
        ({"body": "ok", "extra": 1}, "extra"),
    ],
)
async def test_a_bad_comment_is_refused_with_422_naming_the_field(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    response = await client.post(f"/posts/{post_id}/comments", headers=author.headers, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert field in error_fields(response)
    assert (await client.get(f"/posts/{post_id}/comments")).json()["items"] == []


async def test_commenting_needs_a_login_before_anything_else(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    for url in (f"/posts/{post_id}/comments", f"/posts/{MISSING}/comments"):
        response = await client.post(url, json={"body": "hi"})
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"


async def test_commenting_on_a_missing_post_or_anothers_draft_is_404(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    draft = await factory.post(author, status="draft")
    for user, post_id in ((other, MISSING), (other, draft)):
        response = await client.post(
            f"/posts/{post_id}/comments", headers=user.headers, json={"body": "hi"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "post_not_found"
    # Its author may comment on it.
    await comment(client, author, draft)


# --- list --------------------------------------------------------------------------------


async def test_comments_are_listed_oldest_first_page_by_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.users(2)
    post_id = await factory.post(author)
    other_post = await factory.post(author)
    ids = [(await comment(client, reader, post_id, f"Comment {i}"))["id"] for i in range(5)]
    await comment(client, reader, other_post)
    pages = await walk_pages(client, f"/posts/{post_id}/comments", limit=2)
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert (
        await walk_pages(client, f"/posts/{post_id}/comments", headers=author.headers, limit=2)
        == pages
    )


async def test_new_comments_land_after_the_pages_already_read(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    first = [(await comment(client, author, post_id, f"early {i}"))["id"] for i in range(2)]
    page = (await client.get(f"/posts/{post_id}/comments", params={"limit": 2})).json()
    assert [c["id"] for c in page["items"]] == first
    later = (await comment(client, author, post_id, "late"))["id"]
    again = (await client.get(f"/posts/{post_id}/comments", params={"limit": 2})).json()
    assert [c["id"] for c in again["items"]] == first
    rest = await client.get(f"/posts/{post_id}/comments", params={"cursor": again["next_cursor"]})
    assert [c["id"] for c in rest.json()["items"]] == [later]


async def test_a_post_without_comments_lists_none(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    response = await client.get(f"/posts/{post_id}/comments")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_comments_of_a_missing_post_or_anothers_draft_are_404(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, other = await factory.users(2)
    draft = await factory.post(author, status="draft")
    await comment(client, author, draft, "a note to self")
    for headers, post_id in (({}, MISSING), ({}, draft), (other.headers, draft)):
        response = await client.get(f"/posts/{post_id}/comments", headers=headers)
        assert response.status_code == 404
        assert response.json()["code"] == "post_not_found"
    mine = await client.get(f"/posts/{draft}/comments", headers=author.headers)
    assert [c["body"] for c in mine.json()["items"]] == ["a note to self"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"cursor": "not-a-cursor"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit")],
)
async def test_bad_paging_of_comments_is_422(
    client: httpx.AsyncClient, factory: Factory, params: dict[str, Any], field: str
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    response = await client.get(f"/posts/{post_id}/comments", params=params)
    assert response.status_code == 422
    assert field in error_fields(response)


# --- delete ------------------------------------------------------------------------------


async def test_the_author_deletes_a_comment_with_204(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.users(2)
    post_id = await factory.post(author)
    kept = await comment(client, reader, post_id, "kept")
    gone = await comment(client, reader, post_id, "gone")
    response = await client.delete(
        f"/posts/{post_id}/comments/{gone['id']}", headers=reader.headers
    )
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/posts/{post_id}/comments")).json()["items"] == [kept]
    again = await client.delete(f"/posts/{post_id}/comments/{gone['id']}", headers=reader.headers)
    assert again.status_code == 404


async def test_deleting_someone_elses_comment_is_403_and_keeps_it(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, reader = await factory.users(2)
    post_id = await factory.post(author)
    theirs = await comment(client, reader, post_id)
    # Not even the post's author may delete another's comment.
    response = await client.delete(
        f"/posts/{post_id}/comments/{theirs['id']}", headers=author.headers
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_author"
    assert (await client.get(f"/posts/{post_id}/comments")).json()["items"] == [theirs]


async def test_deleting_a_missing_comment_or_one_of_another_post_is_404(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id, other_post = await factory.post(author), await factory.post(author)
    elsewhere = await comment(client, author, other_post)
    cases = {
        f"/posts/{post_id}/comments/{MISSING}": "comment_not_found",
        f"/posts/{post_id}/comments/{elsewhere['id']}": "comment_not_found",
        f"/posts/{MISSING}/comments/{elsewhere['id']}": "post_not_found",
    }
    for url, code in cases.items():
        response = await client.delete(url, headers=author.headers)
        assert response.status_code == 404, url
        assert response.json()["code"] == code
    assert (await client.get(f"/posts/{other_post}/comments")).json()["items"] == [elsewhere]


async def test_deleting_needs_a_login_and_a_well_formed_id(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    created = await comment(client, author, post_id)
    url = f"/posts/{post_id}/comments/{created['id']}"
    assert (await client.delete(url)).status_code == 401
    malformed = await client.delete(f"/posts/{post_id}/comments/0", headers=author.headers)
    assert malformed.status_code == 422
    assert error_fields(malformed) == {"comment_id"}


async def test_deleting_a_post_deletes_its_comments(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    await comment(client, author, post_id)
    assert (await client.delete(f"/posts/{post_id}", headers=author.headers)).status_code == 204
    assert (await client.get(f"/posts/{post_id}/comments")).status_code == 404
