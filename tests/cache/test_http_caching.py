"""HTTP caching through the API: validators, 304s without the database, invalidation on
writes, private data kept private, optimistic concurrency with If-Match."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from fastpost.http_caching import etag_matches, http_date
from tests.conftest import Factory, select_count


@pytest.mark.parametrize(
    ("header", "etag", "weak", "expected"),
    [
        ('"a"', '"a"', True, True),
        ('W/"a"', '"a"', True, True),
        ('"x", W/"a" , "y"', '"a"', True, True),
        ("*", '"a"', True, True),
        ('"b"', '"a"', True, False),
        ('W/"a"', '"a"', False, False),  # If-Match compares strongly
        ('"a"', '"a"', False, True),
        ('"x", "a"', '"a"', False, True),
    ],
)
def test_etag_comparison_follows_rfc_9110(
    header: str, etag: str, weak: bool, expected: bool
) -> None:
    assert etag_matches(header, etag, weak=weak) is expected


async def test_an_anonymous_post_carries_validators_and_public_cache_control(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    post_id = await factory.post(await factory.user())
    response = await client.get(f"/posts/{post_id}")
    assert response.status_code == 200
    assert response.headers["etag"].startswith(f'"p{post_id}-')
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["cache-control"] == "public, no-cache"
    assert response.headers["vary"] == "Authorization"


async def test_a_cache_hit_and_a_304_make_no_database_query(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    post_id = await factory.post(await factory.user())
    statements.clear()
    first = await client.get(f"/posts/{post_id}")
    assert select_count(statements) == 1
    statements.clear()
    assert (await client.get(f"/posts/{post_id}")).json() == first.json()
    revalidated = await client.get(
        f"/posts/{post_id}", headers={"If-None-Match": first.headers["etag"]}
    )
    assert statements == []
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert revalidated.headers["etag"] == first.headers["etag"]
    assert revalidated.headers["cache-control"] == "public, no-cache"


@pytest.mark.parametrize(
    "if_none_match", ["W/{etag}", '"nope", {etag}', "*"], ids=["weak", "list", "star"]
)
async def test_if_none_match_accepts_weak_tags_lists_and_star(
    client: httpx.AsyncClient, factory: Factory, if_none_match: str
) -> None:
    post_id = await factory.post(await factory.user())
    etag = (await client.get(f"/posts/{post_id}")).headers["etag"]
    response = await client.get(
        f"/posts/{post_id}", headers={"If-None-Match": if_none_match.format(etag=etag)}
    )
    assert response.status_code == 304


async def test_if_modified_since_answers_304_only_when_nothing_changed_since(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    post_id = await factory.post(await factory.user())
    last_modified = (await client.get(f"/posts/{post_id}")).headers["last-modified"]
    fresh = await client.get(f"/posts/{post_id}", headers={"If-Modified-Since": last_modified})
    stale = await client.get(
        f"/posts/{post_id}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert (fresh.status_code, stale.status_code) == (304, 200)


async def test_an_edit_is_visible_at_once_and_changes_the_etag(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="Before")
    before = await client.get(f"/posts/{post_id}")
    await client.get("/posts/")  # the first page is cached too
    edited = await client.patch(
        f"/posts/{post_id}", headers=author.headers, json={"title": "After"}
    )
    assert edited.status_code == 200
    after = await client.get(f"/posts/{post_id}")
    assert after.json()["title"] == "After"
    assert after.headers["etag"] != before.headers["etag"]
    assert edited.headers["etag"] == after.headers["etag"]
    assert (await client.get("/posts/")).json()["items"][0]["title"] == "After"
    revalidated = await client.get(
        f"/posts/{post_id}", headers={"If-None-Match": before.headers["etag"]}
    )
    assert revalidated.status_code == 200


async def test_likes_new_posts_and_deletes_invalidate_what_showed_them(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, fan = await factory.users(2)
    post_id = await factory.post(author)
    assert (await client.get(f"/posts/{post_id}")).json()["likes_count"] == 0
    assert (await client.get("/posts/popular")).json()[0]["likes_count"] == 0
    await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    assert (await client.get(f"/posts/{post_id}")).json()["likes_count"] == 1
    assert (await client.get("/posts/popular")).json()[0]["likes_count"] == 1
    assert (await client.get(f"/users/{author.id}/posts")).json()["items"][0]["likes_count"] == 1

    created = await client.post(
        "/posts/", headers=author.headers, json={"title": "Newer", "content": "c"}
    )
    assert (await client.get("/posts/")).json()["items"][0]["id"] == created.json()["id"]
    assert (await client.get(f"/users/{author.id}/overview")).json()["latest_posts"][0][
        "title"
    ] == "Newer"
    await client.delete(f"/posts/{post_id}", headers=author.headers)
    assert (await client.get(f"/posts/{post_id}")).status_code == 404


async def test_a_profile_edit_reaches_every_cached_post_showing_the_author(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user("oldname")
    post_id = await factory.post(author)
    assert (await client.get(f"/posts/{post_id}")).json()["author"]["username"] == "oldname"
    assert (await client.get(f"/users/{author.id}")).json()["username"] == "oldname"
    await client.patch("/users/me", headers=author.headers, json={"username": "newname"})
    assert (await client.get(f"/posts/{post_id}")).json()["author"]["username"] == "newname"
    assert (await client.get(f"/users/{author.id}")).json()["username"] == "newname"
    assert (await client.get("/posts/")).json()["items"][0]["author"]["username"] == "newname"


async def test_follows_invalidate_both_overviews(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    a, b = await factory.users(2)
    await factory.follow(b, a)
    assert (await client.get(f"/users/{a.id}/overview")).json()["friends"] == []
    await client.post(f"/users/{b.id}/follow", headers=a.headers)
    assert [f["id"] for f in (await client.get(f"/users/{a.id}/overview")).json()["friends"]] == [
        b.id
    ]
    assert [f["id"] for f in (await client.get(f"/users/{b.id}/overview")).json()["friends"]] == [
        a.id
    ]


async def test_one_users_private_view_is_never_served_to_another(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author, fan, other = await factory.users(3)
    post_id = await factory.post(author)
    await client.post(f"/posts/{post_id}/like", headers=fan.headers)
    mine = await client.get(f"/posts/{post_id}", headers=fan.headers)
    anonymous = await client.get(f"/posts/{post_id}")
    theirs = await client.get(f"/posts/{post_id}", headers=other.headers)
    assert mine.json()["liked_by_me"] is True
    assert anonymous.json()["liked_by_me"] is None
    assert theirs.json()["liked_by_me"] is False
    assert mine.headers["cache-control"] == "private, no-store"
    for path in ("/posts/", "/posts/popular", f"/users/{author.id}/overview"):
        private = await client.get(path, headers=fan.headers)
        public = await client.get(path)
        assert "public" not in private.headers.get("cache-control", "")
        assert '"liked_by_me":true' in private.text
        assert '"liked_by_me":true' not in public.text


async def test_if_match_prevents_a_lost_update(client: httpx.AsyncClient, factory: Factory) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="Original")
    etag = (await client.get(f"/posts/{post_id}")).headers["etag"]
    first = await client.patch(
        f"/posts/{post_id}", headers={**author.headers, "If-Match": etag}, json={"title": "One"}
    )
    assert first.status_code == 200
    second = await client.patch(
        f"/posts/{post_id}", headers={**author.headers, "If-Match": etag}, json={"title": "Two"}
    )
    assert second.status_code == 412
    assert second.json()["code"] == "precondition_failed"
    assert (await client.get(f"/posts/{post_id}")).json()["title"] == "One"
    weak = await client.patch(
        f"/posts/{post_id}",
        headers={**author.headers, "If-Match": "W/" + first.headers["etag"]},
        json={"title": "Three"},
    )
    assert weak.status_code == 412  # If-Match needs a strong match
    current = await client.patch(
        f"/posts/{post_id}",
        headers={**author.headers, "If-Match": first.headers["etag"]},
        json={"title": "Three"},
    )
    assert current.status_code == 200


async def test_user_profiles_revalidate_with_their_etag(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    first = await client.get(f"/users/{user.id}")
    again = await client.get(f"/users/{user.id}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_http_dates_are_written_as_the_standard_library_writes_them(moment: datetime) -> None:
    expected = format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)
    assert http_date(moment) == expected
