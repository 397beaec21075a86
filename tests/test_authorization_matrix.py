"""Who may write what: every write route of both APIs (native and RealWorld), from the app's
own route table, against four callers, each with the status it must get.

- anonymous: no token;
- another user: a valid token of someone who owns nothing involved;
- an admin: `users.is_admin` (`fastpost admin grant`). It lets its holder profile requests
  (`?profile=1`, fastpost.observability.profiling) and nothing else: over another user's
  content an admin has exactly the rights of another user, which is what the column checks;
- the owner: the author of the post, comment or article, the user followed, or, for the
  routes about the caller themselves (`/users/me`, `/api/user`), the caller.

A write route added without a row here fails `test_every_write_route_has_a_row`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from fastpost.settings import RateLimitSettings, Settings
from tests.conftest import PASSWORD, Factory, TestUser

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ROLES = ("anonymous", "another user", "admin", "owner")  # the owner last: it may delete


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Rate limits have tests of their own; here one client makes every request.
    return settings.model_copy(update={"rate_limits": RateLimitSettings(enabled=False)})


@dataclass
class Scene:
    """Fresh rows for one request: a post and an article by the owner, a comment on each."""

    owner: TestUser
    post_id: int
    comment_id: int
    slug: str
    article_comment_id: int

    def path(self, template: str) -> str:
        return template.format(
            post_id=self.post_id,
            comment_id=self.comment_id,
            id=self.article_comment_id,
            user_id=self.owner.id,
            username=self.owner.username,
            slug=self.slug,
        )


Body = Callable[[Scene], Any]
_names = itertools.count(1)


def _email(scene: Scene) -> str:
    return f"{scene.owner.username}@example.com"


def _new_account(_: Scene) -> dict[str, str]:
    n = next(_names)
    return {"username": f"newbie{n}", "email": f"newbie{n}@example.com", "password": PASSWORD}


@dataclass(frozen=True)
class Row:
    """The status each role gets, in ROLES order, and the request's JSON body."""

    anonymous: int
    another_user: int
    admin: int
    owner: int
    body: Body | None = None

    def expected(self, role: str) -> int:
        return {
            "anonymous": self.anonymous,
            "another user": self.another_user,
            "admin": self.admin,
            "owner": self.owner,
        }[role]


def _everyone(status: int, body: Body | None = None) -> Row:
    """Open to all: the token plays no part (registration, login)."""
    return Row(status, status, status, status, body)


def _any_user(status: int, body: Body | None = None) -> Row:
    """Any logged-in user, on what is theirs or on something anyone may act on."""
    return Row(401, status, status, status, body)


def _owner_only(status: int, body: Body | None = None) -> Row:
    return Row(401, 403, 403, status, body)


def _follow(status: int) -> Row:
    """Anyone logged in follows the owner; the owner cannot follow themselves (422)."""
    return Row(401, status, status, 422)


MATRIX: dict[tuple[str, str], Row] = {
    # Native API
    ("POST", "/auth/register"): _everyone(201, _new_account),
    (
        "POST",
        "/auth/login",
    ): _everyone(200, lambda s: {"username": s.owner.username, "password": PASSWORD}),
    ("PATCH", "/users/me"): _any_user(200, lambda _: {"bio": "changed"}),
    ("POST", "/posts"): _any_user(201, lambda _: {"title": "t", "content": "c"}),
    ("POST", "/posts/"): _any_user(201, lambda _: {"title": "t", "content": "c"}),
    ("PATCH", "/posts/{post_id}"): _owner_only(200, lambda _: {"title": "changed"}),
    ("DELETE", "/posts/{post_id}"): _owner_only(204),
    ("POST", "/posts/{post_id}/like"): _any_user(200),
    ("DELETE", "/posts/{post_id}/like"): _any_user(200),
    ("POST", "/posts/{post_id}/comments"): _any_user(201, lambda _: {"body": "hello"}),
    ("DELETE", "/posts/{post_id}/comments/{comment_id}"): _owner_only(204),
    ("POST", "/users/{user_id}/follow"): _follow(200),
    # Unfollowing yourself changes nothing, as unfollowing anyone you do not follow: 200.
    ("DELETE", "/users/{user_id}/follow"): _any_user(200),
    # RealWorld API
    ("POST", "/api/users"): _everyone(201, lambda s: {"user": _new_account(s)}),
    (
        "POST",
        "/api/users/login",
    ): _everyone(200, lambda s: {"user": {"email": _email(s), "password": PASSWORD}}),
    ("PUT", "/api/user"): _any_user(200, lambda _: {"user": {"bio": "changed"}}),
    ("POST", "/api/profiles/{username}/follow"): _follow(200),
    ("DELETE", "/api/profiles/{username}/follow"): _follow(200),
    (
        "POST",
        "/api/articles",
    ): _any_user(201, lambda _: {"article": {"title": "t", "description": "d", "body": "b"}}),
    ("PUT", "/api/articles/{slug}"): _owner_only(200, lambda _: {"article": {"title": "new"}}),
    ("DELETE", "/api/articles/{slug}"): _owner_only(204),
    ("POST", "/api/articles/{slug}/favorite"): _any_user(200),
    ("DELETE", "/api/articles/{slug}/favorite"): _any_user(200),
    (
        "POST",
        "/api/articles/{slug}/comments",
    ): _any_user(201, lambda _: {"comment": {"body": "hello"}}),
    ("DELETE", "/api/articles/{slug}/comments/{id}"): _owner_only(204),
}


def write_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every write the app routes, included routers too."""
    found = set()
    for context in iter_route_contexts(app.routes):
        for method in (context.methods or set()) & WRITE_METHODS:
            assert context.path is not None
            found.add((method, context.path))
    return found


def test_every_write_route_has_a_row(app: FastAPI) -> None:
    routes = write_routes(app)
    assert routes, "no write routes found: has the route table changed shape?"
    missing = sorted(routes - MATRIX.keys())
    assert not missing, f"write routes without a row in the authorization matrix: {missing}"
    assert not sorted(MATRIX.keys() - routes), "rows for routes that no longer exist"


def _headers(user: TestUser | None, path: str) -> dict[str, str]:
    if user is None:
        return {}
    token = user.headers["Authorization"].split(" ", 1)[1]
    return {"Authorization": ("Token " if path.startswith("/api/") else "Bearer ") + token}


@pytest.fixture
def scene_maker(client: httpx.AsyncClient, factory: Factory) -> Callable[[TestUser], Any]:
    async def make(owner: TestUser) -> Scene:
        post_id = await factory.post(owner)
        comment = await client.post(
            f"/posts/{post_id}/comments", json={"body": "first"}, headers=owner.headers
        )
        assert comment.status_code == 201, comment.text
        token = _headers(owner, "/api/")
        article = await client.post(
            "/api/articles",
            json={"article": {"title": "a", "description": "d", "body": "b"}},
            headers=token,
        )
        assert article.status_code == 201, article.text
        slug = article.json()["article"]["slug"]
        article_comment = await client.post(
            f"/api/articles/{slug}/comments", json={"comment": {"body": "first"}}, headers=token
        )
        assert article_comment.status_code == 201, article_comment.text
        return Scene(
            owner, post_id, comment.json()["id"], slug, article_comment.json()["comment"]["id"]
        )

    return make


async def test_each_caller_gets_the_status_its_role_allows(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, scene_maker: Any
) -> None:
    another = await factory.user("another")
    admin = await factory.user("admin", is_admin=True)
    wrong: list[str] = []
    for (method, template), row in sorted(MATRIX.items()):
        # A new owner per route: what one route changed (a follow, a deleted post) never
        # decides another's answer.
        owner = await factory.user()
        callers = {"anonymous": None, "another user": another, "admin": admin, "owner": owner}
        for role in ROLES:
            scene = await scene_maker(owner)
            path = scene.path(template)
            answer = await client.request(
                method,
                path,
                json=row.body(scene) if row.body else None,
                headers=_headers(callers[role], path),
            )
            if answer.status_code != row.expected(role):
                wrong.append(
                    f"{method} {template} as {role}: {answer.status_code}, "
                    f"expected {row.expected(role)} ({answer.text[:120]})"
                )
    assert not wrong, "\n".join(wrong)
