"""Every error of the RealWorld API, as the spec writes it: one table, each row a test.

The README's table ("The RealWorld API") is this table rendered, and a test holds them
equal; another holds the table to what the app's OpenAPI declares, so a route or a status
added on either side without a row fails. To print the README's table again:

    .venv/bin/python -m tests.realworld.test_errors
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import PASSWORD, Factory

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| Route | Status | When | Body |"

BLANK = "can't be blank"
TAKEN = "has already been taken"
MISSING_TOKEN = {"token": ["is missing"]}
INVALID_TOKEN = {"token": ["is invalid"]}
ARTICLE_NOT_FOUND = {"article": ["not found"]}
PROFILE_NOT_FOUND = {"profile": ["not found"]}
LONG_SLUG = "s" * 101
LONG_NAME = "n" * 65


@dataclass(frozen=True)
class Case:
    """One error: a request to a route (a template as the spec writes it, under /api) and
    the answer it gets."""

    method: str
    route: str
    status: int
    when: str
    errors: dict[str, list[str]]
    # Who asks: "jake" (his token, in the API's `Token` scheme), "nobody" (no header) or
    # "forger" (a token that is not one).
    caller: str = "jake"
    # The path, when not the route with jake's article, ann's profile and ann's comment.
    path: str | None = None
    body: Any = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.route} {self.status} {self.when}"


def _user(**fields: Any) -> dict[str, Any]:
    return {"user": fields}


def _article(**fields: Any) -> dict[str, Any]:
    return {"article": fields}


ALL_BLANK = {"email": [BLANK], "username": [BLANK], "password": [BLANK]}
NEW_ARTICLE = {"title": "Dragons", "description": "How to train them", "body": "Carefully."}

CASES = [
    # Users and authentication
    Case("POST", "/users/login", 401, "a wrong password", {"credentials": ["invalid"]},
         "nobody", body=_user(email="jake@example.com", password="wrong password")),
    Case("POST", "/users/login", 401, "an unknown email", {"credentials": ["invalid"]},
         "nobody", body=_user(email="nobody@example.com", password=PASSWORD)),
    Case("POST", "/users/login", 422, "email and password missing",
         {"email": [BLANK], "password": [BLANK]}, "nobody", body=_user()),
    Case("POST", "/users/login", 422, "no body at all", {"user": [BLANK]}, "nobody"),
    Case("POST", "/users", 409, "a taken username", {"username": [TAKEN]}, "nobody",
         body=_user(username="jake", email="new@example.com", password=PASSWORD)),
    Case("POST", "/users", 409, "a taken email", {"email": [TAKEN]}, "nobody",
         body=_user(username="newcomer", email="jake@example.com", password=PASSWORD)),
    Case("POST", "/users", 422, "username and email empty, password null", ALL_BLANK,
         "nobody", body=_user(username="", email="", password=None)),
    Case("POST", "/users", 422, "a password of 7 characters",
         {"password": ["is too short (minimum is 8 characters)"]}, "nobody",
         body=_user(username="newcomer", email="new@example.com", password="7 chars")),
    Case("POST", "/users", 422, "an email that is not an address", {"email": ["is invalid"]},
         "nobody", body=_user(username="newcomer", email="newcomer", password=PASSWORD)),
    Case("GET", "/user", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("GET", "/user", 401, "a forged token", INVALID_TOKEN, "forger"),
    Case("PUT", "/user", 401, "no token", MISSING_TOKEN, "nobody", body=_user(bio="x")),
    Case("PUT", "/user", 409, "a taken username", {"username": [TAKEN]},
         body=_user(username="ann")),
    Case("PUT", "/user", 409, "a taken email", {"email": [TAKEN]},
         body=_user(email="ann@example.com")),
    Case("PUT", "/user", 422, "email, username and password null", ALL_BLANK,
         body=_user(email=None, username=None, password=None)),
    Case("PUT", "/user", 422, "email, username and password empty", ALL_BLANK,
         body=_user(email="", username="", password="")),
    Case("PUT", "/user", 422, "a password of 7 characters",
         {"password": ["is too short (minimum is 8 characters)"]}, body=_user(password="7 chars")),
    # Profiles
    Case("GET", "/profiles/{username}", 401, "a forged token", INVALID_TOKEN, "forger"),
    Case("GET", "/profiles/{username}", 404, "no such user", PROFILE_NOT_FOUND,
         path="/profiles/nobody"),
    Case("GET", "/profiles/{username}", 422, "a name longer than 64",
         {"username": ["is too long (maximum is 64 characters)"]}, path=f"/profiles/{LONG_NAME}"),
    Case("POST", "/profiles/{username}/follow", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("POST", "/profiles/{username}/follow", 404, "no such user", PROFILE_NOT_FOUND,
         path="/profiles/nobody/follow"),
    Case("POST", "/profiles/{username}/follow", 422, "oneself",
         {"profile": ["can't follow yourself"]}, path="/profiles/jake/follow"),
    Case("DELETE", "/profiles/{username}/follow", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("DELETE", "/profiles/{username}/follow", 404, "no such user", PROFILE_NOT_FOUND,
         path="/profiles/nobody/follow"),
    Case("DELETE", "/profiles/{username}/follow", 422, "a name longer than 64",
         {"username": ["is too long (maximum is 64 characters)"]},
         path=f"/profiles/{LONG_NAME}/follow"),
    # Articles
    Case("GET", "/articles/feed", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("GET", "/articles/feed", 422, "limit=0", {"limit": ["must be greater than or equal to 1"]},
         path="/articles/feed?limit=0"),
    Case("GET", "/articles", 401, "a forged token", INVALID_TOKEN, "forger"),
    Case("GET", "/articles", 422, "limit=ten", {"limit": ["is not a number"]},
         path="/articles?limit=ten"),
    Case("GET", "/articles", 422, "offset=-1", {"offset": ["must be greater than or equal to 0"]},
         path="/articles?offset=-1"),
    Case("POST", "/articles", 401, "no token", MISSING_TOKEN, "nobody",
         body=_article(**NEW_ARTICLE)),
    Case("POST", "/articles", 422, "title, description and body missing",
         {"title": [BLANK], "description": [BLANK], "body": [BLANK]}, body=_article()),
    Case("POST", "/articles", 422, "title empty, description null, body blank",
         {"title": [BLANK], "description": [BLANK], "body": [BLANK]},
         body=_article(title="", description=None, body="  ")),
    Case("POST", "/articles", 422, "tagList null", {"tagList": [BLANK]},
         body=_article(**NEW_ARTICLE, tagList=None)),
    Case("POST", "/articles", 422, "21 tags", {"tagList": ["is too long (maximum is 20 items)"]},
         body=_article(**NEW_ARTICLE, tagList=[f"t{n}" for n in range(21)])),
    Case("GET", "/articles/{slug}", 401, "a forged token", INVALID_TOKEN, "forger"),
    Case("GET", "/articles/{slug}", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article"),
    Case("GET", "/articles/{slug}", 422, "a slug longer than 100",
         {"slug": ["is too long (maximum is 100 characters)"]}, path=f"/articles/{LONG_SLUG}"),
    Case("PUT", "/articles/{slug}", 401, "no token", MISSING_TOKEN, "nobody",
         body=_article(body="Mine now")),
    Case("PUT", "/articles/{slug}", 403, "another's article", {"article": ["forbidden"]},
         path="/articles/{anns}", body=_article(body="Mine now")),
    Case("PUT", "/articles/{slug}", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article", body=_article(body="Mine now")),
    Case("PUT", "/articles/{slug}", 422, "tagList null", {"tagList": [BLANK]},
         body=_article(tagList=None)),
    Case("PUT", "/articles/{slug}", 422, "title null, description empty, body blank",
         {"title": [BLANK], "description": [BLANK], "body": [BLANK]},
         body=_article(title=None, description="", body=" ")),
    Case("DELETE", "/articles/{slug}", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("DELETE", "/articles/{slug}", 403, "another's article", {"article": ["forbidden"]},
         path="/articles/{anns}"),
    Case("DELETE", "/articles/{slug}", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article"),
    Case("DELETE", "/articles/{slug}", 422, "a slug longer than 100",
         {"slug": ["is too long (maximum is 100 characters)"]}, path=f"/articles/{LONG_SLUG}"),
    # Favorites
    Case("POST", "/articles/{slug}/favorite", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("POST", "/articles/{slug}/favorite", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article/favorite"),
    Case("POST", "/articles/{slug}/favorite", 422, "a slug longer than 100",
         {"slug": ["is too long (maximum is 100 characters)"]},
         path=f"/articles/{LONG_SLUG}/favorite"),
    Case("DELETE", "/articles/{slug}/favorite", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("DELETE", "/articles/{slug}/favorite", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article/favorite"),
    Case("DELETE", "/articles/{slug}/favorite", 422, "a slug longer than 100",
         {"slug": ["is too long (maximum is 100 characters)"]},
         path=f"/articles/{LONG_SLUG}/favorite"),
    # Comments
    Case("GET", "/articles/{slug}/comments", 401, "a forged token", INVALID_TOKEN, "forger"),
    Case("GET", "/articles/{slug}/comments", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article/comments"),
    Case("GET", "/articles/{slug}/comments", 422, "a slug longer than 100",
         {"slug": ["is too long (maximum is 100 characters)"]},
         path=f"/articles/{LONG_SLUG}/comments"),
    Case("POST", "/articles/{slug}/comments", 401, "no token", MISSING_TOKEN, "nobody",
         body={"comment": {"body": "Thanks!"}}),
    Case("POST", "/articles/{slug}/comments", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article/comments", body={"comment": {"body": "Thanks!"}}),
    Case("POST", "/articles/{slug}/comments", 422, "body empty", {"body": [BLANK]},
         body={"comment": {"body": ""}}),
    Case("POST", "/articles/{slug}/comments", 422, "comment null", {"comment": [BLANK]},
         body={"comment": None}),
    Case("DELETE", "/articles/{slug}/comments/{id}", 401, "no token", MISSING_TOKEN, "nobody"),
    Case("DELETE", "/articles/{slug}/comments/{id}", 403, "another's comment",
         {"comment": ["forbidden"]}, path="/articles/{anns}/comments/{anns_comment}"),
    Case("DELETE", "/articles/{slug}/comments/{id}", 404, "no such article", ARTICLE_NOT_FOUND,
         path="/articles/no-such-article/comments/{anns_comment}"),
    Case("DELETE", "/articles/{slug}/comments/{id}", 404, "no such comment",
         {"comment": ["not found"]}, path="/articles/{anns}/comments/9999999"),
    Case("DELETE", "/articles/{slug}/comments/{id}", 422, "id=one", {"id": ["is not a number"]},
         path="/articles/{anns}/comments/one"),
]  # fmt: skip
# The spec's error statuses; others (a 429 from the rate limits) are documented apart.
SPEC_STATUSES = {401, 403, 404, 409, 422}


def render_table(cases: list[Case]) -> list[str]:
    """The README's table of the cases, one line each."""
    lines = [HEADER, "|---|---|---|---|"]
    for case in cases:
        body = json.dumps({"errors": case.errors})
        lines.append(
            f"| `{case.method} /api{case.route}` | {case.status} | {case.when} | `{body}` |"
        )
    return lines


@dataclass
class World:
    """jake and ann, an article each, and ann's comment on hers."""

    tokens: dict[str, str] = field(default_factory=dict)
    places: dict[str, str] = field(default_factory=dict)


async def _world(app: FastAPI, client: httpx.AsyncClient, factory: Factory) -> World:
    world = World()
    for name in ("jake", "ann"):
        user = await factory.user(name)
        world.tokens[name] = app.state.tokens.issue(user.id).access_token
    for name, place in (("jake", "mine"), ("ann", "anns")):
        headers = {"Authorization": f"Token {world.tokens[name]}"}
        created = await client.post("/api/articles", json=_article(**NEW_ARTICLE), headers=headers)
        assert created.status_code == 201, created.text
        world.places[place] = created.json()["article"]["slug"]
    comment = await client.post(
        f"/api/articles/{world.places['anns']}/comments",
        json={"comment": {"body": "First!"}},
        headers={"Authorization": f"Token {world.tokens['ann']}"},
    )
    assert comment.status_code == 201, comment.text
    world.places["anns_comment"] = str(comment.json()["comment"]["id"])
    return world


def _path(case: Case, world: World) -> str:
    template = case.path or case.route.replace("{slug}", "{mine}").replace(
        "{id}", "{anns_comment}"
    ).replace("{username}", "ann")
    return "/api" + template.format(**world.places)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_each_error_answers_as_the_readme_table_says(
    case: Case, app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    world = await _world(app, client, factory)
    headers = {}
    if case.caller == "jake":
        headers["Authorization"] = f"Token {world.tokens['jake']}"
    elif case.caller == "forger":
        headers["Authorization"] = "Token not.a.jwt"
    response = await client.request(
        case.method,
        _path(case, world),
        headers=headers,
        json=case.body,
    )
    assert (response.status_code, response.json()) == (case.status, {"errors": case.errors})


def test_the_readme_table_is_this_table() -> None:
    lines = README.read_text().splitlines()
    assert HEADER in lines, "README.md has no table of RealWorld errors"
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert lines[start:end] == render_table(CASES)


async def test_the_table_covers_every_route_and_error_status_the_api_declares(
    app: FastAPI,
) -> None:
    declared = {
        (method.upper(), path.removeprefix("/api"), int(status))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
        for status in operation.get("responses", {})
        if status.isdigit() and int(status) in SPEC_STATUSES
    }
    assert {(case.method, case.route, case.status) for case in CASES} == declared


async def test_update_user_accepts_passwords_of_8_to_64_characters_and_clears_an_empty_bio(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake", bio="Skateboards")
    token = jake.headers["Authorization"].split(" ", 1)[1]
    headers = {"Authorization": f"Token {token}"}
    for password in ("8 chars!", "x" * 64):
        changed = await client.put("/api/user", json=_user(password=password), headers=headers)
        assert changed.status_code == 200, changed.text
        login = await client.post(
            "/api/users/login", json=_user(email="jake@example.com", password=password)
        )
        assert login.status_code == 200
    cleared = await client.put("/api/user", json=_user(bio=""), headers=headers)
    assert cleared.json()["user"]["bio"] is None


async def test_update_article_keeps_omitted_tags_and_clears_them_with_an_empty_list(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    jake = await factory.user("jake")
    headers = {"Authorization": "Token " + jake.headers["Authorization"].split(" ", 1)[1]}
    created = await client.post(
        "/api/articles", json=_article(**NEW_ARTICLE, tagList=["dragons"]), headers=headers
    )
    url = f"/api/articles/{created.json()['article']['slug']}"
    kept = await client.put(url, json=_article(body="Very carefully."), headers=headers)
    assert kept.json()["article"]["tagList"] == ["dragons"]
    cleared = await client.put(url, json=_article(tagList=[]), headers=headers)
    assert cleared.json()["article"]["tagList"] == []


async def test_openapi_documents_nullability_as_the_spec_does(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]

    def nullable(model: str) -> dict[str, bool]:
        properties = schemas[model]["properties"]
        return {
            name: any(option.get("type") == "null" for option in prop.get("anyOf", []))
            for name, prop in properties.items()
        }

    assert nullable("UpdateUser") == {
        "email": False,
        "username": False,
        "password": False,
        "bio": True,
        "image": True,
    }
    assert not any(nullable("UpdateArticle").values())
    assert not any(nullable("NewArticle").values())


if __name__ == "__main__":
    print("\n".join(render_table(CASES)))
