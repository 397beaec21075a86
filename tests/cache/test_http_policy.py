"""The HTTP caching policy (README, "HTTP caching policy"), read through a client that
honours it as a browser does (tests.helpers.CachingClient, RFC 9111): every cached route
shows its reader's own write on the very next read, and nothing that depends on the caller
is stored at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastpost.app import create_app
from fastpost.http_caching import PRIVATE, PUBLIC, public_cache_control
from fastpost.settings import Settings
from tests.conftest import Factory, TestUser
from tests.helpers import CachingClient


def _realworld(user: TestUser) -> dict[str, str]:
    return {"Authorization": user.headers["Authorization"].replace("Bearer ", "Token ", 1)}


@dataclass
class Case:
    """A cached route, and a write by `author` that must show on its next read."""

    url: Callable[[TestUser, int, str], str]
    write: Callable[[httpx.AsyncClient, TestUser, int, str], Awaitable[httpx.Response]]
    shows_write: Callable[[httpx.Response], bool]


async def _new_post(client: httpx.AsyncClient, author: TestUser, *_: object) -> httpx.Response:
    body = {"title": "Freshly written", "content": "Just now.", "tags": ["fresh"]}
    return await client.post("/posts/", json=body, headers=author.headers)


async def _new_article(client: httpx.AsyncClient, author: TestUser, *_: object) -> httpx.Response:
    article = {"title": "Freshly written", "description": "d", "body": "b", "tagList": ["fresh"]}
    return await client.post("/api/articles", json={"article": article}, headers=_realworld(author))


def _lists_fresh_post(response: httpx.Response) -> bool:
    return "Freshly written" in response.text


CASES = {
    "GET /posts/{id}": Case(
        lambda _, post_id, __: f"/posts/{post_id}",
        lambda client, author, post_id, _: client.patch(
            f"/posts/{post_id}", json={"title": "Freshly written"}, headers=author.headers
        ),
        _lists_fresh_post,
    ),
    "GET /posts/": Case(lambda *_: "/posts/", _new_post, _lists_fresh_post),
    "GET /posts/popular": Case(
        lambda *_: "/posts/popular",
        lambda client, author, post_id, _: client.post(
            f"/posts/{post_id}/like", headers=author.headers
        ),
        lambda response: response.json()[0]["likes_count"] == 1,
    ),
    "GET /users/{id}/posts": Case(
        lambda author, *_: f"/users/{author.id}/posts", _new_post, _lists_fresh_post
    ),
    "GET /users/{id}/overview": Case(
        lambda author, *_: f"/users/{author.id}/overview", _new_post, _lists_fresh_post
    ),
    "GET /users/{id}": Case(
        lambda author, *_: f"/users/{author.id}",
        lambda client, author, *_: client.patch(
            "/users/me", json={"bio": "Freshly written"}, headers=author.headers
        ),
        _lists_fresh_post,
    ),
    "GET /tags/": Case(lambda *_: "/tags/", _new_post, lambda r: "fresh" in r.json()),
    "GET /api/articles": Case(lambda *_: "/api/articles", _new_article, _lists_fresh_post),
    "GET /api/articles/{slug}": Case(
        lambda _, __, slug: f"/api/articles/{slug}",
        lambda client, author, _, slug: client.put(
            f"/api/articles/{slug}",
            json={"article": {"body": "Freshly written"}},
            headers=_realworld(author),
        ),
        _lists_fresh_post,
    ),
    "GET /api/tags": Case(
        lambda *_: "/api/tags", _new_article, lambda r: "fresh" in r.json()["tags"]
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_caching_client_sees_its_own_write_on_its_next_read(
    client: httpx.AsyncClient, factory: Factory, case: Case
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    slug = (await client.get(f"/posts/{post_id}")).json()["slug"]
    browser = CachingClient(client)
    url = case.url(author, post_id, slug)

    before = await browser.get(url)
    assert before.status_code == 200
    assert before.headers["cache-control"] == PUBLIC
    assert not case.shows_write(before)
    again = await browser.get(url)
    assert browser.source == "revalidated"  # asked again, answered 304
    assert again.content == before.content

    assert (await case.write(client, author, post_id, slug)).is_success
    after = await browser.get(url)

    assert browser.source == "network"
    assert case.shows_write(after)


@pytest.mark.parametrize(
    ("url", "write"),
    [
        ("/users/me", lambda c, u: c.patch("/users/me", json={"bio": "new"}, headers=u.headers)),
        (
            "/api/user",
            lambda c, u: c.put("/api/user", json={"user": {"bio": "new"}}, headers=_realworld(u)),
        ),
    ],
    ids=["GET /users/me", "GET /api/user"],
)
async def test_what_depends_on_the_token_is_never_stored(
    client: httpx.AsyncClient,
    factory: Factory,
    url: str,
    write: Callable[[httpx.AsyncClient, TestUser], Awaitable[httpx.Response]],
) -> None:
    user = await factory.user()
    headers = user.headers if url.startswith("/users") else _realworld(user)
    browser = CachingClient(client)

    before = await browser.get(url, headers=headers)
    assert before.headers["cache-control"] == PRIVATE
    assert (await write(client, user)).is_success
    after = await browser.get(url, headers=headers)

    assert browser.source == "network"
    assert after.json() != before.json()


@pytest.mark.parametrize(
    "url", ["/posts/{post_id}", "/posts/", "/api/articles", "/api/articles/{slug}"]
)
async def test_a_logged_in_read_of_a_cached_route_is_private(
    client: httpx.AsyncClient, factory: Factory, url: str
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    slug = (await client.get(f"/posts/{post_id}")).json()["slug"]
    headers = _realworld(author) if url.startswith("/api") else author.headers

    response = await client.get(url.format(post_id=post_id, slug=slug), headers=headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == PRIVATE


async def test_responses_that_state_no_policy_are_never_served_unasked(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    # An anonymous answer with no validator, an error, a write's and a login's answers.
    assert (await client.get("/posts/search?q=x")).headers["cache-control"] == "no-cache"
    assert (await client.get("/nowhere")).headers["cache-control"] == "no-cache"
    created = await client.post(
        "/posts/", json={"title": "t", "content": "c"}, headers=user.headers
    )
    assert created.headers["cache-control"] == PRIVATE
    login = await client.post("/auth/login", data={"username": "nobody", "password": "x"})
    assert login.headers["cache-control"] == PRIVATE


def test_shared_caches_may_keep_public_answers_only_when_configured() -> None:
    assert public_cache_control(0) == "public, no-cache"
    # Browsers still revalidate every time; shared caches after 30 s.
    assert public_cache_control(30) == "public, max-age=0, must-revalidate, s-maxage=30"


async def test_the_caching_client_serves_a_fresh_answer_without_asking() -> None:
    """The client's own check: the policy this module tests against would fail it."""
    asked = 0

    async def page(request: Request) -> Response:
        nonlocal asked
        asked += 1
        return Response(str(asked), headers={"cache-control": "public, max-age=5", "etag": '"a"'})

    app = Starlette(routes=[Route("/", page)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        now = 1000.0
        browser = CachingClient(client, clock=lambda: now)
        assert (await browser.get("/")).text == "1"
        now += 4
        assert (await browser.get("/")).text == "1"
        assert browser.source == "cache"  # a write in between would not have shown
        now += 2
        await browser.get("/")
        assert browser.source == "network"
        assert asked == 2


async def test_with_a_shared_max_age_browsers_still_revalidate_and_shared_caches_keep_it(
    settings: Settings, factory: Factory
) -> None:
    shared = settings.model_copy(
        update={"cache": settings.cache.model_copy(update={"shared_max_age_seconds": 30})}
    )
    app = create_app(shared)
    post_id = await factory.post(await factory.user())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            browser, cdn = CachingClient(client), CachingClient(client, shared=True)
            for cache in (browser, cdn):
                first = await cache.get(f"/posts/{post_id}")
                assert first.headers["cache-control"] == public_cache_control(30)
                await cache.get(f"/posts/{post_id}")

            assert browser.source == "revalidated"  # a 304 from tier 1
            assert cdn.source == "cache"  # not asked for 30 s
