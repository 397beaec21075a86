"""Routing at a small fixed cost per request: the APIRouter every fastpost domain uses,
which FastAPI skips at once for a path outside its prefix; and the plain and lean routes
that serve the hot routes before any router, without FastAPI's request handling (see
PlainRoute, LeanRoute, RouteTable; benchmarks/bench_fixed_cost.py measures them).

FastAPI (0.165) matches an included router by trying each of its routes in turn, with some
scope bookkeeping around each try, even when the path cannot start with the router's prefix.
A request for the last router included (the RealWorld API, /health) so paid for a failed
match against every route of every router before it: half the CPU time of a `GET /health`
(in-process process time; to see it again, put APIRouter back for PrefixRouter and compare
the `routed` column of benchmarks/bench_fixed_cost.py for `GET /health`).
tests/test_routing.py checks that a PrefixRouter does not try them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin, get_type_hints

from fastapi import APIRouter, FastAPI, params
from fastapi._compat import ModelField
from fastapi.dependencies.models import (
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.dependencies.utils import _should_embed_body_fields, request_params_to_args
from fastapi.routing import APIRoute, _IncludedRouter
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from fastpost.request_body import replaying


class PrefixRouter(APIRouter):
    """An APIRouter that answers "no match" without trying its routes when the path is
    outside its prefix."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.prefix and not get_route_path(scope).startswith(self.prefix):
            return Match.NONE, {}
        return super().matches(scope)


def build_routing_now(app: FastAPI) -> None:
    """Build every included router's matching state now, rather than on its first request.

    FastAPI (0.165) builds it lazily, each route's dependency tree included: for the
    RealWorld router that is many times a request's own cost, paid by whichever request
    reaches it first after a deploy, and far more under `?profile=1` (pyinstrument samples
    every step of it). Time a first request against the second without this call to see
    it; tests/test_routing.py checks that startup builds it, not the first request.
    """

    def build(router: Any) -> None:
        for candidate in router.effective_candidates():
            if hasattr(candidate, "effective_candidates"):
                build(candidate)
        router.effective_low_priority_routes()

    for route in app.router.routes:
        if hasattr(route, "effective_candidates"):
            build(route)


class PlainRoute(Route):
    """A Starlette route that names itself in the scope, as FastAPI's routes do, so that
    metrics and access lines label its requests by its template, not as "unmatched".

    For hot routes with nothing for FastAPI to do: no parameters to validate, no
    dependencies, a body known in advance. FastAPI's request handling (its route matching
    bookkeeping, dependency solving, exit stacks, response handling) costs several times
    such an endpoint's own work (benchmarks/bench_fixed_cost.py, `GET /health` routed and
    plain). The FastAPI route it shadows stays, so that /openapi.json still documents the
    operation; tests/test_routing.py checks that both answer alike.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class RouteTable(BaseRoute):
    """The plain and lean routes, by the first segment of their paths, tried before every
    router: a request tries only those that share its first segment (one dict lookup),
    not each in turn as the app's router would, its 404s and slash redirects included."""

    def __init__(self) -> None:
        self._by_segment: dict[str, list[Route]] = {}
        self._matched_path: str | None = None

    @property
    def path(self) -> str | None:
        """The template of the route the last `matches` chose, or None. Tools that match the
        app's routes themselves and read the winner's `path` find it here as on any route:
        OpenTelemetry's FastAPI instrumentation names its server spans so, matching and
        reading with no await between (tests/observability/test_tracing.py)."""
        return self._matched_path

    def add(self, route: Route) -> None:
        segment = _first_segment(route.path)
        if "{" in segment:
            raise ValueError(f"{route.path}: a routed path's first segment must be fixed")
        self._by_segment.setdefault(segment, []).append(route)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        self._matched_path = None
        routes = self._by_segment.get(_first_segment(get_route_path(scope)))
        if routes is None:
            return Match.NONE, {}
        partial: Scope | None = None
        for route in routes:
            match, child_scope = route.matches(scope)
            if match == Match.FULL:
                child_scope[_SELECTED] = route
                self._matched_path = route.path
                return match, child_scope
            if match == Match.PARTIAL and partial is None:
                child_scope[_SELECTED] = route
                self._matched_path = route.path
                partial = child_scope
        if partial is not None:
            return Match.PARTIAL, partial
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: Route = scope.pop(_SELECTED)
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for routes in self._by_segment.values():
            for route in routes:
                try:
                    return route.url_path_for(name, **path_params)
                except NoMatchFound:
                    pass
        raise NoMatchFound(name, path_params)


# Where RouteTable.matches leaves the route it chose, for its handle.
_SELECTED = "fastpost.routing.selected"


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]


def _route_table(app: FastAPI) -> RouteTable:
    routes = app.router.routes
    if not (routes and isinstance(routes[0], RouteTable)):
        routes.insert(0, RouteTable())
    table = routes[0]
    assert isinstance(table, RouteTable)
    return table


def add_plain_routes(app: FastAPI, *routes: PlainRoute) -> None:
    """Route `routes` before the included routers, so that their requests try no other
    route (see PlainRoute and RouteTable)."""
    table = _route_table(app)
    for route in routes:
        table.add(route)


class LeanRoute(PlainRoute):
    """A FastAPI route's own endpoint, served without FastAPI's request handling.

    For routes whose every parameter is the request, an integer path parameter, a query
    parameter (or a model of them), a JSON body read as one model, or a dependency that
    reads only the request (the database, the cache, the caller's id from the bearer
    token), and whose endpoint returns a Response: no model to serialise, and FastAPI's
    handling of the request costs more than the endpoint's own work when it reads from the
    cache, and a third of what a `POST /posts/` costs besides its statements.
    FastAPI solves each dependency with bookkeeping of its own per request; this route calls
    them in the order the endpoint declares them, validates its parameters with their
    FastAPI fields, and calls the endpoint.

    What it does not handle goes to the FastAPI route, which answers as it always has: a
    parameter or body that fails validation (its 422), a body in another form, dependency
    overrides. That route also stays in its router, for /openapi.json and for the methods
    this one does not serve.
    A lean route is tried before every router, so its path must match nothing that a route
    included before its own would: integer parameters only (`{post_id:int}`), and callers
    name the endpoints (add_lean_routes) rather than every eligible route becoming one.
    tests/test_routing.py checks that both answer alike; benchmarks/bench_fixed_cost.py
    measures each route routed and lean.
    """

    def __init__(self, api_route: APIRoute, app: FastAPI) -> None:
        dependant = api_route.dependant
        body_field = _json_model_body(dependant.body_params)
        unsupported = [
            kind
            for kind, present in (
                ("headers", dependant.header_params),
                ("cookies", dependant.cookie_params),
                ("a body other than one JSON model", dependant.body_params and not body_field),
                ("a Response parameter", dependant.response_param_name),
                ("background tasks", dependant.background_tasks_param_name),
                ("security scopes", dependant.security_scopes_param_name),
            )
            if present
        ]
        resolvers: list[tuple[str | None, Callable[[Request], Awaitable[Any]]]] = []
        for sub in dependant.dependencies:
            reads_request_only = (
                sub.request_param_name is not None
                and not sub.dependencies
                and not (sub.path_params or sub.query_params or sub.header_params)
                and not (sub.cookie_params or sub.body_params)
                and sub.call is not None
                and _is_coroutine_callable(sub.call)
                and not (_is_gen_callable(sub.call) or _is_async_gen_callable(sub.call))
            )
            if not reads_request_only:
                unsupported.append(f"the dependency {sub.call!r}")
            else:
                resolvers.append((sub.name, cast(Callable[[Request], Awaitable[Any]], sub.call)))
        path = api_route.path
        for field in dependant.path_params:
            if field.field_info.annotation is not int:
                unsupported.append(f"the path parameter {field.name} (not an int)")
            path = path.replace(f"{{{field.name}}}", f"{{{field.name}:int}}")
        methods = set(api_route.methods or ())
        endpoint = dependant.call
        if not methods:
            unsupported.append("no methods")
        if endpoint is None or not _returns_response(endpoint):
            unsupported.append("a return type other than Response")
        if unsupported:
            raise ValueError(f"{api_route.path} cannot be a LeanRoute: " + ", ".join(unsupported))
        assert endpoint is not None
        super().__init__(path, endpoint, methods=list(methods), include_in_schema=False)
        # As declared: Starlette would add HEAD to a GET, which the FastAPI route answers 405.
        self.methods: set[str] = methods
        # The template as documented (`/posts/{post_id}`), for whoever reads it; matching
        # uses the pattern compiled above, with its `:int`.
        self.path = api_route.path
        self.api_route = api_route
        self._app = app
        self._resolvers = tuple(resolvers)
        self._request_param = dependant.request_param_name
        self._path_fields = dependant.path_params
        self._query_fields = dependant.query_params
        self._body_field = body_field
        # Validated query parameters by query string, when every parameter is a value no
        # endpoint can change, so that one validation serves each request that sends the same
        # string (most of a route's requests send one of a few: `/feed`, `?limit=20`).
        # Validating the page parameters was a tenth of a cached GET /feed's CPU.
        immutable = all(_immutable(f.field_info.annotation) for f in self._query_fields)
        self._validated_queries: dict[bytes, dict[str, Any]] | None = (
            {} if self._query_fields and immutable else None
        )
        self._endpoint = endpoint

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            # Labelled as the FastAPI route is: metrics, access lines and traces alike.
            child_scope["route"] = self.api_route
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.methods or self._app.dependency_overrides:
            # Its 405 (a PARTIAL match that no other route bettered), or the overrides.
            await self.api_route.handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        values: dict[str, Any] = {}
        # The body first, as FastAPI reads it: a body that is not JSON is its 422 before any
        # dependency runs (a missing token included).
        json_body: Any = None
        # What the FastAPI route reads when it answers instead: the body again, if read.
        fallback_receive = receive
        if self._body_field is not None:
            body = await request.body()
            fallback_receive = replaying(body, receive)
            json_body = _json_object(request, body)
            if json_body is None:
                await self.api_route.app(scope, fallback_receive, send)
                return
        for name, resolve in self._resolvers:
            value = await resolve(request)
            if name is not None:
                values[name] = value
        path_params = scope["path_params"]
        for field in self._path_fields:
            # The field's own validation, without FastAPI's generic parameter handling around
            # it (a sixth of this route's CPU time: cProfile of GET /posts/{id}, cache off).
            value, errors = field.validate(path_params[field.alias])
            if errors:
                # The FastAPI route's own 422, word for word.
                await self.api_route.app(scope, fallback_receive, send)
                return
            values[field.name] = value
        if self._query_fields:
            validated = self._validated_queries
            query = scope["query_string"]
            query_values = validated.get(query) if validated is not None else None
            if query_values is None:
                query_values, errors = request_params_to_args(
                    self._query_fields, request.query_params
                )
                if errors:
                    await self.api_route.app(scope, fallback_receive, send)
                    return
                # Bounded: anyone can send new query strings; past the bound, they are
                # validated per request as before.
                if validated is not None and len(validated) < _VALIDATED_QUERIES:
                    validated[query] = query_values
            values.update(query_values)
        if self._body_field is not None:
            model, errors = self._body_field.validate(json_body, {}, loc=("body",))
            if errors:
                await self.api_route.app(scope, fallback_receive, send)
                return
            values[self._body_field.name] = model
        if self._request_param is not None:
            values[self._request_param] = request
        response: Response = await self._endpoint(**values)
        await response(scope, receive, send)


def _json_object(request: Request, body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object when it is one and is sent as `application/json`; else
    None, and the FastAPI route answers (its 422s word for word, or the other forms it
    reads: no content type, `+json` types), reading the body again."""
    content_type = request.headers.get("content-type", "")
    if not body or content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser
        return None
    return value if isinstance(value, dict) else None


def _json_model_body(fields: list[ModelField]) -> ModelField | None:
    """The one body parameter, when it is a JSON model that FastAPI reads as the whole body
    (not embedded under its name, not a form), else None."""
    if len(fields) != 1 or _should_embed_body_fields(fields):
        return None
    field = fields[0]
    info = field.field_info
    is_model = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    if not is_model or isinstance(info, params.Form) or not isinstance(info, params.Body):
        return None
    return field


_VALIDATED_QUERIES = 64


def _immutable(annotation: Any) -> bool:
    """Whether a parameter of this type is a value no one can change once validated: a
    scalar, an enum member, a frozen model of such, or a union of them."""
    if annotation in (int, str, bool, float, type(None)):
        return True
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return True
        if issubclass(annotation, BaseModel):
            return bool(annotation.model_config.get("frozen")) and all(
                _immutable(field.annotation) for field in annotation.model_fields.values()
            )
        return False
    origin = get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (Union, UnionType, Annotated):
        args = get_args(annotation)
        return all(_immutable(arg) for arg in (args[:1] if origin is Annotated else args))
    return False


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    returned = get_type_hints(endpoint).get("return")
    return isinstance(returned, type) and issubclass(returned, Response)


def add_lean_routes(app: FastAPI, *endpoints: Callable[..., Any]) -> None:
    """Serve these endpoints' routes as LeanRoutes, tried before the routers, in this order."""
    wanted = set(endpoints)
    found: dict[Callable[..., Any], list[LeanRoute]] = {endpoint: [] for endpoint in endpoints}

    def visit(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, _IncludedRouter):
                included = route.include_context
                if included.prefix or included.dependencies:
                    # The route's own path and dependant would not say all of it.
                    raise ValueError(
                        "lean routes need routers included without a prefix or dependencies"
                    )
                visit(route.original_router.routes)
            elif isinstance(route, APIRoute) and route.endpoint in wanted:
                found[route.endpoint].append(LeanRoute(route, app))

    if app.router.dependencies:
        raise ValueError("lean routes need an app without app-wide dependencies")
    visit(app.router.routes)
    missing = [endpoint.__qualname__ for endpoint, routes in found.items() if not routes]
    if missing:
        raise ValueError(f"no route serves {', '.join(missing)}")
    add_plain_routes(app, *(route for routes in found.values() for route in routes))
