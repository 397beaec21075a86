"""The RealWorld API at /api: each endpoint, and each error case of the spec beyond what the
Postman suite checks."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.settings import Settings
from tests.conftest import PASSWORD, Factory, TestUser, make_settings, select_count

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def token_headers(user: TestUser) -> dict[str, str]:
    """The API's own scheme: `Token <jwt>`."""
    return {"Authorization": "Token " + user.headers["Authorization"].split(" ", 1)[1]}


async def new_article(client: httpx.AsyncClient, user: TestUser, **fields: Any) -> dict[str, Any]:
    article = {"title": "How to train your dragon", "description": "Ever wonder how?"}
    article.update({"body": "Very carefully.", **fields})
    response = await client.post(
        "/api/articles", json={"article": article}, headers=token_headers(user)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["article"]
    return created


# Users and authentication


async def test_register_answers_201_with_the_user_and_a_token_that_works(
    client: httpx.AsyncClient,
) -> None:
    body = {"user": {"username": "jake", "email": "jake@jake.jake", "password": PASSWORD}}
    response = await client.post("/api/users", json=body)
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["username"] == "jake"
    assert user["email"] == "jake@jake.jake"
    assert user["bio"] is None
    assert user["image"] is None
    me = await client.get("/api/user", headers={"Authorization": f"Token {user['token']}"})
    assert me.json()["user"]["username"] == "jake"


async def test_register_with_a_taken_username_or_email_is_409_in_the_api_error_shape(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("jake")
    taken_name = {"username": "jake", "email": "other@example.com", "password": PASSWORD}
    response = await client.post("/api/users", json={"user": taken_name})
    assert response.status_code == 409
    assert list(response.json()["errors"]) == ["username"]
    taken_email = {"username": "other", "email": "jake@example.com", "password": PASSWORD}
    response = await client.post("/api/users", json={"user": taken_email})
    assert response.status_code == 409
    assert list(response.json()["errors"]) == ["email"]


async def test_register_with_invalid_fields_is_422_listing_each_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/users", json={"user": {"username": "", "email": "not-an-email"}}
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert set(errors) == {"username", "email", "password"}
    assert all(isinstance(messages, list) and messages for messages in errors.values())


async def test_login_by_email_returns_the_user_and_a_wrong_password_is_401(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("jake")
    ok = await client.post(
        "/api/users/login", json={"user": {"email": "JAKE@example.com", "password": PASSWORD}}
    )
    assert ok.status_code == 200
    assert ok.json()["user"]["username"] == "jake"
    assert ok.json()["user"]["token"]
    wrong = await client.post(
        "/api/users/login", json={"user": {"email": "jake@example.com", "password": "nope"}}
    )
    assert wrong.status_code == 401
    assert "errors" in wrong.json()


async def test_current_user_without_a_token_or_with_a_bad_one_is_401(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/api/user")
    assert missing.status_code == 401
    assert missing.json() == {"errors": {"token": ["is missing"]}}
    forged = await client.get("/api/user", headers={"Authorization": "Token not.a.jwt"})
    assert forged.status_code == 401
    assert forged.json() == {"errors": {"token": ["is invalid"]}}


async def test_update_user_sets_fields_and_null_or_empty_bio_and_image_clear_them(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    headers = token_headers(jake)
    body = {"bio": "I like to skateboard", "image": "https://i.example.com/jake.png"}
    set_ = await client.put("/api/user", json={"user": body}, headers=headers)
    assert set_.status_code == 200
    assert set_.json()["user"]["bio"] == "I like to skateboard"
    assert set_.json()["user"]["image"] == "https://i.example.com/jake.png"
    cleared = await client.put(
        "/api/user", json={"user": {"bio": None, "image": ""}}, headers=headers
    )
    assert cleared.json()["user"]["bio"] is None
    assert cleared.json()["user"]["image"] is None
    empty = await client.put(
        "/api/user", json={"user": {"bio": "", "image": None}}, headers=headers
    )
    assert empty.json()["user"]["bio"] is None
    assert empty.json()["user"]["image"] is None


async def test_update_user_email_and_username_and_409_when_taken(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    await factory.user("taken")
    headers = token_headers(jake)
    changed = await client.put(
        "/api/user",
        json={"user": {"email": "new@example.com", "username": "jacob"}},
        headers=headers,
    )
    assert changed.status_code == 200
    assert changed.json()["user"]["email"] == "new@example.com"
    assert changed.json()["user"]["username"] == "jacob"
    clash = await client.put("/api/user", json={"user": {"username": "taken"}}, headers=headers)
    assert clash.status_code == 409
    assert list(clash.json()["errors"]) == ["username"]
    assert (await client.put("/api/user", json={"user": {}})).status_code == 401


# Profiles


async def test_profile_shows_following_for_the_caller_and_404_for_unknown_users(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, celeb = await factory.user("jake"), await factory.user("celeb")
    anonymous = await client.get("/api/profiles/celeb")
    assert anonymous.json() == {
        "profile": {"username": "celeb", "bio": None, "image": None, "following": False}
    }
    followed = await client.post("/api/profiles/celeb/follow", headers=token_headers(jake))
    assert followed.status_code == 200
    assert followed.json()["profile"]["following"] is True
    seen = await client.get("/api/profiles/celeb", headers=token_headers(jake))
    assert seen.json()["profile"]["following"] is True
    unfollowed = await client.delete("/api/profiles/celeb/follow", headers=token_headers(jake))
    assert unfollowed.json()["profile"]["following"] is False
    assert celeb.username == "celeb"
    missing = await client.get("/api/profiles/nobody")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"profile": ["not found"]}}


async def test_follow_needs_a_token_before_anything_else_and_404s_unknown_users(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    assert (await client.post("/api/profiles/nobody/follow")).status_code == 401
    unknown = await client.post("/api/profiles/nobody/follow", headers=token_headers(jake))
    assert unknown.status_code == 404
    yourself = await client.post("/api/profiles/jake/follow", headers=token_headers(jake))
    assert yourself.status_code == 422
    assert "errors" in yourself.json()


# Articles


async def test_create_article_answers_201_with_sorted_tags_and_millisecond_timestamps(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    article = await new_article(client, jake, tagList=["training", "dragons", "dragons"])
    assert article["tagList"] == ["dragons", "training"]
    assert article["body"] == "Very carefully."
    assert article["description"] == "Ever wonder how?"
    assert article["favorited"] is False
    assert article["favoritesCount"] == 0
    assert article["author"] == {
        "username": "jake", "bio": None, "image": None, "following": False,
    }  # fmt: skip
    assert TIMESTAMP.match(article["createdAt"])
    assert TIMESTAMP.match(article["updatedAt"])
    assert article["slug"].startswith("how-to-train-your-dragon-")


async def test_equal_titles_get_different_slugs_and_a_slug_survives_a_title_change(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    first, second = await new_article(client, jake), await new_article(client, jake)
    assert first["slug"] != second["slug"]
    renamed = await client.put(
        f"/api/articles/{first['slug']}",
        json={"article": {"title": "A new title"}},
        headers=token_headers(jake),
    )
    assert renamed.status_code == 200
    assert renamed.json()["article"]["title"] == "A new title"
    assert renamed.json()["article"]["slug"] == first["slug"]


async def test_create_article_without_a_token_is_401_and_with_missing_fields_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    assert (await client.post("/api/articles", json={"article": {}})).status_code == 401
    response = await client.post(
        "/api/articles", json={"article": {"title": ""}}, headers=token_headers(jake)
    )
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"title", "description", "body"}


async def test_get_article_by_slug_has_the_body_and_unknown_slugs_are_404(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    created = await new_article(client, jake)
    response = await client.get(f"/api/articles/{created['slug']}")
    assert response.status_code == 200
    assert response.json()["article"]["body"] == "Very carefully."
    missing = await client.get("/api/articles/no-such-article")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"article": ["not found"]}}


async def test_article_lists_never_carry_the_body(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    await new_article(client, jake)
    listed = (await client.get("/api/articles")).json()["articles"]
    assert len(listed) == 1
    assert "body" not in listed[0]


async def test_update_article_tag_list_omitted_keeps_null_is_refused_and_empty_clears(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    slug = (await new_article(client, jake, tagList=["a", "b"]))["slug"]
    url, headers = f"/api/articles/{slug}", token_headers(jake)

    async def put(article: dict[str, Any]) -> list[str]:
        response = await client.put(url, json={"article": article}, headers=headers)
        assert response.status_code == 200, response.text
        tags: list[str] = response.json()["article"]["tagList"]
        return tags

    assert await put({"body": "Changed"}) == ["a", "b"]
    refused = await client.put(url, json={"article": {"tagList": None}}, headers=headers)
    assert refused.status_code == 422  # not nullable in the spec: see test_errors.py
    assert await put({"tagList": ["c", "a"]}) == ["a", "c"]
    assert await put({"tagList": []}) == []
    article = (await client.get(url)).json()["article"]
    assert article["body"] == "Changed"
    assert (await client.get("/api/tags")).json() == {"tags": []}


async def test_only_the_author_may_update_or_delete_an_article_401_before_404(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, other = await factory.user("jake"), await factory.user("other")
    slug = (await new_article(client, jake))["slug"]
    change = {"article": {"body": "mine now"}}
    forbidden = await client.put(f"/api/articles/{slug}", json=change, headers=token_headers(other))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"errors": {"article": ["forbidden"]}}
    deleting = await client.delete(f"/api/articles/{slug}", headers=token_headers(other))
    assert deleting.status_code == 403
    assert (await client.delete("/api/articles/no-such-article")).status_code == 401
    assert (await client.put("/api/articles/no-such-article", json=change)).status_code == 401
    missing = await client.delete("/api/articles/no-such-article", headers=token_headers(jake))
    assert missing.status_code == 404


async def test_delete_article_answers_204_and_then_it_is_gone(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    slug = (await new_article(client, jake, tagList=["gone"]))["slug"]
    await client.post(
        f"/api/articles/{slug}/comments",
        json={"comment": {"body": "first"}},
        headers=token_headers(jake),
    )
    response = await client.delete(f"/api/articles/{slug}", headers=token_headers(jake))
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/api/articles/{slug}")).status_code == 404
    assert (await client.get("/api/articles")).json() == {"articles": [], "articlesCount": 0}
    assert (await client.get("/api/tags")).json() == {"tags": []}


async def test_list_filters_by_tag_author_and_favorited_with_exact_counts(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, anna = await factory.user("jake"), await factory.user("anna")
    dragons = await new_article(client, jake, tagList=["dragons"])
    await new_article(client, jake, tagList=["cats"])
    annas = await new_article(client, anna, tagList=["dragons"])
    await client.post(f"/api/articles/{annas['slug']}/favorite", headers=token_headers(jake))

    async def slugs(**params: str) -> tuple[list[str], int]:
        body = (await client.get("/api/articles", params=params)).json()
        return [a["slug"] for a in body["articles"]], body["articlesCount"]

    assert await slugs(tag="dragons") == ([annas["slug"], dragons["slug"]], 2)
    assert (await slugs(author="jake"))[1] == 2
    assert await slugs(favorited="jake") == ([annas["slug"]], 1)
    assert await slugs(tag="dragons", author="anna") == ([annas["slug"]], 1)
    assert await slugs(tag="nothing") == ([], 0)
    assert await slugs(author="nobody") == ([], 0)
    assert (await slugs())[1] == 3


async def test_limit_and_offset_page_the_list_and_articles_count_is_the_total(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    created = [(await new_article(client, jake, title=f"Article {i}"))["slug"] for i in range(5)]
    body = (await client.get("/api/articles", params={"limit": 2, "offset": 1})).json()
    assert [a["slug"] for a in body["articles"]] == [created[3], created[2]]
    assert body["articlesCount"] == 5
    past_the_end = (await client.get("/api/articles", params={"offset": 10})).json()
    assert past_the_end == {"articles": [], "articlesCount": 5}
    bad = await client.get("/api/articles", params={"limit": 0})
    assert bad.status_code == 422
    assert list(bad.json()["errors"]) == ["limit"]


async def test_drafts_made_through_the_native_api_are_not_listed_or_counted(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    await factory.post(jake, status="draft")
    await factory.post(jake)
    body = (await client.get("/api/articles", params={"author": "jake"})).json()
    assert body["articlesCount"] == 1
    assert len(body["articles"]) == 1


async def test_feed_lists_followed_authors_only_and_needs_a_token(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, anna, bob = await factory.user("jake"), await factory.user("anna"), await factory.user()
    await factory.follow(jake, anna)
    annas = await new_article(client, anna)
    await new_article(client, bob)
    feed = (await client.get("/api/articles/feed", headers=token_headers(jake))).json()
    assert [a["slug"] for a in feed["articles"]] == [annas["slug"]]
    assert feed["articlesCount"] == 1
    assert feed["articles"][0]["author"]["following"] is True
    assert "body" not in feed["articles"][0]
    assert (await client.get("/api/articles/feed")).status_code == 401


# Favorites


async def test_favorite_and_unfavorite_keep_the_count_exact_and_are_idempotent(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, anna = await factory.user("jake"), await factory.user("anna")
    slug = (await new_article(client, anna))["slug"]
    url = f"/api/articles/{slug}/favorite"
    for _ in range(2):
        response = await client.post(url, headers=token_headers(jake))
        assert response.status_code == 200
        assert response.json()["article"]["favorited"] is True
        assert response.json()["article"]["favoritesCount"] == 1
    await client.post(url, headers=token_headers(anna))
    native = await client.get("/api/articles", headers=token_headers(jake))
    assert native.json()["articles"][0]["favoritesCount"] == 2
    assert native.json()["articles"][0]["favorited"] is True
    undone = await client.delete(url, headers=token_headers(jake))
    assert undone.json()["article"]["favorited"] is False
    assert undone.json()["article"]["favoritesCount"] == 1
    assert (await client.post(url)).status_code == 401
    missing = await client.post("/api/articles/nope/favorite", headers=token_headers(jake))
    assert missing.status_code == 404


# Comments


async def test_comments_are_created_201_listed_and_deleted_204(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, anna = await factory.user("jake"), await factory.user("anna")
    slug = (await new_article(client, anna))["slug"]
    url = f"/api/articles/{slug}/comments"
    created = await client.post(
        url, json={"comment": {"body": "Thank you so much!"}}, headers=token_headers(jake)
    )
    assert created.status_code == 201
    comment = created.json()["comment"]
    assert comment["body"] == "Thank you so much!"
    assert comment["author"]["username"] == "jake"
    assert TIMESTAMP.match(comment["createdAt"])
    listed = (await client.get(url)).json()["comments"]
    assert [c["id"] for c in listed] == [comment["id"]]
    deleted = await client.delete(f"{url}/{comment['id']}", headers=token_headers(jake))
    assert deleted.status_code == 204
    assert (await client.get(url)).json() == {"comments": []}


async def test_comment_errors_401_before_404_403_for_others_and_404_unknown(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake, anna = await factory.user("jake"), await factory.user("anna")
    slug = (await new_article(client, anna))["slug"]
    url = f"/api/articles/{slug}/comments"
    assert (await client.post(url, json={"comment": {"body": "x"}})).status_code == 401
    assert (await client.post("/api/articles/nope/comments", json={})).status_code == 401
    assert (await client.delete("/api/articles/nope/comments/1")).status_code == 401
    comment_id = (
        await client.post(url, json={"comment": {"body": "mine"}}, headers=token_headers(jake))
    ).json()["comment"]["id"]
    others = await client.delete(f"{url}/{comment_id}", headers=token_headers(anna))
    assert others.status_code == 403
    assert others.json() == {"errors": {"comment": ["forbidden"]}}
    unknown = await client.delete(f"{url}/{comment_id + 100}", headers=token_headers(jake))
    assert unknown.status_code == 404
    assert (await client.get("/api/articles/nope/comments")).status_code == 404
    empty = await client.post(url, json={"comment": {"body": ""}}, headers=token_headers(jake))
    assert empty.status_code == 422
    assert list(empty.json()["errors"]) == ["body"]


# Tags


async def test_tags_lists_tags_in_use_most_used_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    assert (await client.get("/api/tags")).json() == {"tags": []}
    await new_article(client, jake, tagList=["b", "a"])
    await new_article(client, jake, tagList=["b"])
    assert (await client.get("/api/tags")).json() == {"tags": ["b", "a"]}


# The native API shows what the RealWorld one added


async def test_native_posts_carry_slug_and_description(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    body = {"title": "Native", "content": "text", "description": "short"}
    post = (await client.post("/posts/", json=body, headers=jake.headers)).json()
    assert post["description"] == "short"
    article = (await client.get(f"/api/articles/{post['slug']}")).json()["article"]
    assert article["title"] == "Native"
    assert article["body"] == "text"


# Performance and configuration


@pytest.mark.unsharded(
    "counts the statements of one database; sharded lists run one per database, which "
    "tests/shards/test_realworld.py and tests/shards/test_routing.py count"
)
@pytest.mark.parametrize("logged_in", [False, True])
async def test_article_lists_run_the_same_number_of_queries_for_any_page_size(
    client: httpx.AsyncClient, factory: Factory, statements: list[str], logged_in: bool
) -> None:
    jake, anna = await factory.user("jake"), await factory.user("anna")
    await factory.follow(jake, anna)
    for i in range(12):
        await new_article(client, anna, title=f"Post {i}", tagList=["x", f"t{i}"])
    headers = token_headers(jake) if logged_in else {}
    lists: list[tuple[str, dict[str, str]]] = [
        # Offset 1: past the first page, which an anonymous caller gets from the cache.
        ("/api/articles", {"offset": "1"}),
        ("/api/articles", {"tag": "x"}),
        ("/api/articles", {"favorited": "anna"}),
    ]
    if logged_in:
        lists.append(("/api/articles/feed", {}))
    for url, filters in lists:
        counts = []
        for limit in (1, 5, 12):
            statements.clear()
            response = await client.get(url, params={**filters, "limit": limit}, headers=headers)
            assert response.status_code == 200
            available = 0 if "favorited" in filters else 12 - int(filters.get("offset", 0))
            assert len(response.json()["articles"]) == min(limit, available)
            counts.append(select_count(statements))
        # One statement carries the page and its total; a page with no rows (nobody
        # favorited anything here) asks for the total separately.
        expected = 2 if "favorited" in filters else 1
        assert counts == [expected] * 3, (url, filters)


async def test_cors_preflight_is_answered_for_configured_origins(
    settings: Settings,
) -> None:
    configured = settings.model_copy(update={"cors_origins": ["http://localhost:4100"]})
    app: FastAPI = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.options(
                "/api/articles",
                headers={
                    "Origin": "http://localhost:4100",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:4100"


def test_cors_origins_are_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTPOST_CORS_ORIGINS", "http://localhost:3000, http://localhost:4200")
    assert Settings(env="test").cors_origins == ["http://localhost:3000", "http://localhost:4200"]
    assert make_settings("sqlite+aiosqlite://").cors_origins == [
        "http://localhost:3000",
        "http://localhost:4200",
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=many", "limit"),
        ("offset=-1", "offset"),
        ("tag=", "tag"),
        ("author=" + "a" * 65, "author"),
        ("favorited=%00", "favorited"),
    ],
)
async def test_a_bad_list_query_is_422_naming_the_parameter(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await client.get(f"/api/articles?{query}")

    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]


async def test_a_bad_feed_query_is_422_and_the_list_query_is_documented(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    response = await client.get("/api/articles/feed?offset=x", headers=token_headers(user))
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["offset"]

    spec = (await client.get("/openapi.json")).json()
    parameters = spec["paths"]["/api/articles"]["get"]["parameters"]
    assert {p["name"] for p in parameters if p["in"] == "query"} == {
        "tag",
        "author",
        "favorited",
        "limit",
        "offset",
    }
    # The list reads the caller itself, without a dependency: the optional scheme is declared.
    assert spec["paths"]["/api/articles"]["get"]["security"] == [{"Token": []}, {}]
    assert "Token" in spec["components"]["securitySchemes"]


async def test_a_bad_token_on_the_list_is_401_before_a_bad_query_is_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/api/articles?limit=0", headers={"Authorization": "Token not-a-jwt"}
    )
    assert response.status_code == 401
    assert list(response.json()["errors"]) == ["token"]
    response = await client.get("/api/articles?limit=0")
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["limit"]
