"""Routers skip paths outside their prefix, without changing what any request gets."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, _IncludedRouter
from starlette.routing import Match

from fastpost.app import create_app
from fastpost.comments.router import router as comments_router
from fastpost.health import router as health_router
from fastpost.posts.router import router as posts_router
from fastpost.posts.router import tags_router, user_posts_router
from fastpost.realworld.router import router as realworld_router
from fastpost.routing import PlainRoute, PrefixRouter, RouteTable, add_lean_routes
from fastpost.settings import Settings
from fastpost.social.router import feed_router
from fastpost.social.router import router as social_router
from fastpost.users.router import auth_router, users_router
from tests.conftest import Factory, make_settings


def test_a_router_does_not_try_its_routes_for_a_path_outside_its_prefix() -> None:
    router = PrefixRouter(prefix="/health")
    scope = {"type": "http", "path": "/posts/1", "root_path": "", "method": "GET"}

    assert router.matches(scope) == (Match.NONE, {})


async def test_every_router_still_answers_its_own_paths(client: httpx.AsyncClient) -> None:
    # /health is included last but one: its request passes every other router first.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/api/tags")).status_code == 200
    assert (await client.get("/posts")).status_code == 200


async def test_wrong_method_is_405_and_unknown_path_under_a_prefix_is_404(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.delete("/health")).status_code == 405
    assert (await client.get("/health/nowhere")).status_code == 404
    assert (await client.get("/nowhere")).status_code == 404


async def test_routes_match_behind_a_root_path(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/behind/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/behind/proxy/health")

    assert response.status_code == 200
    assert isinstance(health_router, PrefixRouter)


def _callables(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _callables(sub)


def _is_async(call: Any) -> bool:
    if inspect.isfunction(call) or inspect.ismethod(call):
        return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
    return inspect.iscoroutinefunction(type(call).__call__)  # a dependency object


def test_no_route_or_dependency_runs_in_a_worker_thread(app: FastAPI) -> None:
    # FastAPI runs a plain `def` endpoint or dependency in the thread pool: a thread hop on
    # every request (it tripled the CPU time of a cached /api/articles). All of ours are
    # async; CPU-bound work goes to threads explicitly (see fastpost.security).
    routers = [
        posts_router, user_posts_router, tags_router, comments_router, feed_router,
        users_router, social_router, auth_router, health_router, realworld_router,
    ]  # fmt: skip
    sync = [
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for call in _callables(route.dependant)
        if not _is_async(call)
    ]
    assert len(routers) == len(set(map(id, routers)))
    assert sync == []


async def test_routing_is_built_at_startup_not_by_the_first_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI builds each included router's matching state lazily; fastpost builds it in
    # the lifespan (outside tests), so the first request after a deploy does not pay it.
    built: list[object] = []
    original = _IncludedRouter._build_effective_context

    def counting(self: _IncludedRouter, route: Any) -> Any:
        built.append(route)
        return original(self, route)

    monkeypatch.setattr(_IncludedRouter, "_build_effective_context", counting)
    production = make_settings(settings.db.url).model_copy(update={"env": "production"})
    app = create_app(production)
    async with app.router.lifespan_context(app):
        at_startup = len(built)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/health", "/api/tags", "/posts/?limit=1"):
                assert (await client.get(path)).status_code == 200
    assert at_startup > 20
    assert len(built) == at_startup


def _without_route_table(app: FastAPI) -> FastAPI:
    """The same app with its plain and lean routes taken out: every request goes through
    the included routers, as it did before they existed."""
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, RouteTable)]
    return app


_COMPARED_HEADERS = ("content-type", "cache-control", "etag", "vary", "allow", "www-authenticate")


async def test_lean_and_plain_routes_answer_exactly_as_their_fastapi_routes(
    settings: Settings, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    bad_token = {"Authorization": "Bearer not-a-token"}
    realworld = {"Authorization": author.headers["Authorization"].replace("Bearer", "Token")}
    json_body = {**author.headers, "Content-Type": "application/json"}
    reads: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/health", {}),
        ("GET", f"/posts/{post_id}", {}),
        ("GET", f"/posts/{post_id}", author.headers),
        ("GET", f"/posts/{post_id}", bad_token),
        ("GET", "/posts/0", {}),  # 422, from the FastAPI route itself
        ("GET", f"/posts/{2**53}", {}),
        ("GET", "/posts/999999", {}),
        ("PUT", f"/posts/{post_id}", author.headers),  # 405
        ("GET", "/users/me", {}),
        ("GET", "/users/me", author.headers),
        ("GET", f"/users/{author.id}", {}),
        ("GET", f"/users/{author.id}/overview", author.headers),
        ("GET", "/tags", {}),
        ("GET", "/tags/", {}),
        ("GET", "/posts/", {}),
        ("GET", "/posts", author.headers),
        ("GET", "/posts/?limit=0", {}),  # 422
        ("GET", "/posts/?status=draft", {}),  # 401
        ("GET", "/posts/popular?limit=2", {}),
        ("GET", "/posts/search?q=post", author.headers),
        ("GET", "/posts/search", {}),  # 422: q is required
        ("GET", f"/posts/{post_id}/comments", {}),
        ("GET", f"/users/{author.id}/posts?limit=5", {}),
        ("GET", "/feed", author.headers),
        ("GET", "/feed", {}),  # 401
        ("GET", f"/users/{author.id}/followers", {}),
        ("GET", f"/users/{author.id}/friends?cursor=nonsense", {}),
        ("POST", f"/users/{author.id}/follow", author.headers),  # 4xx: oneself
        ("GET", "/api/articles", {}),
        ("GET", "/api/articles/feed", realworld),
        ("GET", "/api/user", realworld),
        ("GET", "/api/tags", {}),
    ]
    # Writes with a JSON body: every way a body can be refused, each answered by the FastAPI
    # route (the lean route hands it the body it read).
    writes: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/posts/", json_body, b'{"title": "t"'),  # not JSON
        ("POST", "/posts/", json_body, b"[1, 2]"),  # JSON, not an object
        ("POST", "/posts/", json_body, b'{"title": "t"}'),  # no content
        ("POST", "/posts/", json_body, b'{"title": "", "content": "c"}'),
        ("POST", "/posts/", json_body, b'{"title": "t", "content": "c", "status": "gone"}'),
        ("POST", "/posts/", json_body, b'{"title": "\xff", "content": "c"}'),
        ("POST", "/posts/", json_body, b"\xff\xfe"),  # not UTF-8
        ("POST", "/posts/", json_body, b"[" * 100_000 + b"]" * 100_000),  # past the parser
        ("POST", "/posts/", json_body, b""),
        ("POST", "/posts/", {**author.headers, "Content-Type": "text/plain"}, b"{}"),
        ("POST", "/posts", {"Content-Type": "application/json"}, b'{"title": "t", "content": "c"}'),
        ("POST", "/posts/", bad_token, b'{"title": "t", "content": "c"}'),
        # Not JSON and no token: FastAPI reads the body before any dependency, so a 422.
        ("POST", "/posts/", {"Content-Type": "application/json"}, b"{"),
        ("POST", "/posts/", {"Content-Type": "application/json"}, b'{"title": 1}'),
        ("POST", "/api/articles", realworld, b'{"article": {"title": "t"}}'),
        ("POST", "/api/articles", realworld, b'{"title": "t", "body": "b"}'),
        ("POST", "/api/articles", {}, b'{"article": {"title": "t", "body": "b"}}'),
    ]
    requests = [(method, path, headers, b"") for method, path, headers in reads] + writes
    answers = []
    for variant in (create_app(settings), _without_route_table(create_app(settings))):
        async with variant.router.lifespan_context(variant):
            transport = httpx.ASGITransport(app=variant)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answers.append(
                    [
                        (
                            response.status_code,
                            response.content,
                            {name: response.headers.get(name) for name in _COMPARED_HEADERS},
                        )
                        for method, path, headers, body in requests
                        for response in [
                            await client.request(method, path, headers=headers, content=body)
                        ]
                    ]
                )
    lean, routed = answers
    for request, got, expected in zip(requests, lean, routed, strict=True):
        assert got == expected, request


async def test_a_lean_write_creates_what_its_fastapi_route_creates(
    settings: Settings, factory: Factory
) -> None:
    author = await factory.user()
    realworld = {"Authorization": author.headers["Authorization"].replace("Bearer", "Token")}
    sent = [
        ("/posts/", author.headers, {"title": "Lean", "content": "c", "tags": ["a", "b"]}),
        ("/posts", author.headers, {"title": "Draft", "content": "c", "status": "draft"}),
        ("/api/articles", realworld, {"article": {"title": "T", "description": "d", "body": "b"}}),
    ]
    created = []
    for variant in (create_app(settings), _without_route_table(create_app(settings))):
        async with variant.router.lifespan_context(variant):
            transport = httpx.ASGITransport(app=variant)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answers = [await client.post(path, headers=h, json=body) for path, h, body in sent]
        created.append(
            [(a.status_code, a.headers["content-type"], _made(a.json())) for a in answers]
        )
    lean, routed = created
    assert [status for status, _, _ in lean] == [201, 201, 201]
    assert lean == routed


def _made(body: Any) -> Any:
    """A created post as answered, without what differs between two creations."""
    if isinstance(body, dict):
        return {
            key: _made(value)
            for key, value in body.items()
            if key not in {"id", "slug", "created_at", "updated_at", "createdAt", "updatedAt"}
        }
    return body


async def test_a_lean_route_is_labelled_as_its_fastapi_route(
    app: FastAPI, factory: Factory
) -> None:
    post_id = await factory.post(await factory.user())
    seen: list[Any] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        seen.append(scope.get("route"))

    transport = httpx.ASGITransport(app=spy)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get(f"/posts/{post_id}")).status_code == 200
        assert (await client.get("/health")).status_code == 200

    assert [route.path for route in seen] == ["/posts/{post_id}", "/health"]
    assert isinstance(seen[0], APIRoute)  # the metrics and the access line name it alike


def test_a_lean_route_refuses_an_endpoint_it_cannot_serve(app: FastAPI) -> None:
    from fastpost.posts.router import delete_post, update_post
    from fastpost.realworld.router import get_article

    with pytest.raises(ValueError, match="headers"):
        add_lean_routes(app, update_post)
    with pytest.raises(ValueError, match="a return type other than Response"):
        add_lean_routes(app, delete_post)
    # A str parameter could match a path that a route included earlier serves.
    with pytest.raises(ValueError, match="the path parameter slug"):
        add_lean_routes(app, get_article)


def test_the_route_table_tries_only_routes_sharing_the_first_segment() -> None:
    table = RouteTable()
    tried: list[str] = []

    class Counting(PlainRoute):
        def matches(self, scope: Any) -> tuple[Match, Any]:
            tried.append(self.path)
            return super().matches(scope)

    async def endpoint(request: Any) -> Any:
        raise AssertionError("not called")

    table.add(Counting("/posts/{post_id:int}", endpoint))
    table.add(Counting("/users/me", endpoint))
    scope = {"type": "http", "path": "/users/me", "root_path": "", "method": "GET"}

    assert table.matches(scope)[0] == Match.FULL
    assert tried == ["/users/me"]
    assert table.matches({**scope, "path": "/nowhere"}) == (Match.NONE, {})
