"""What /openapi.json promises, kept true where the framework answers for us
(tests/test_schemathesis.py checks every operation against it).

- A route whose caller may be anonymous (a security dependency with `required=False`:
  fastpost.security's OptionalUserId, RealWorld's OptionalCaller) lists "no credentials"
  among its security requirements: FastAPI would declare the token required.
- A request body that is not JSON at all is refused by FastAPI with 400 before any route
  runs, and one too large with 413 (fastpost.observability.edge.Edge): every operation that
  takes a body declares both, in the error shape of its API.
- A method a path does not have is answered 405 with `Allow` listing every method of that
  path (HTTP says so, RFC 9110 15.5.6), not only those of the first route whose path
  matched, which is what the router puts there.
- An unexpected error under the RealWorld prefix answers 500 in the RealWorld shape; the
  native handler still runs first (it logs the error).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from starlette.exceptions import HTTPException
from starlette.routing import Match

from fastpost.realworld.errors import errors_body

_BODY_ERRORS = {
    "400": "The body is not readable as its media type (JSON that does not parse, say)",
    "413": "Request body too large",
}


def install_contract(app: FastAPI, realworld_prefix: str) -> None:
    """Call after every error handler and route is in place."""
    _document_body_errors(app, realworld_prefix)
    _document_optional_credentials(app)
    _list_every_allowed_method(app)
    _literal_paths_refuse_other_methods(app)
    _realworld_server_errors(app, realworld_prefix)


def _document_body_errors(app: FastAPI, realworld_prefix: str) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            shape = "ErrorsOut" if path.startswith(realworld_prefix) else "ErrorOut"
            for operation in operations.values():
                responses = operation.get("responses")
                if "requestBody" not in operation or responses is None:
                    continue
                for status, description in _BODY_ERRORS.items():
                    responses.setdefault(
                        status,
                        {
                            "description": description,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{shape}"}
                                }
                            },
                        },
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _optional_security(dependant: Any) -> bool:
    for dependency in dependant.dependencies:
        call = dependency.call
        if isinstance(call, SecurityBase) and getattr(call, "required", None) is False:
            return True
        if _optional_security(dependency):
            return True
    return False


def _document_optional_credentials(app: FastAPI) -> None:
    generate = app.openapi
    found: set[tuple[str, str | None]] | None = None

    def optional() -> set[tuple[str, str | None]]:
        # Walked on the schema's first build, not when the app is made: walking every
        # route's context was nine tenths of create_app's time, which tests pay per test.
        nonlocal found
        if found is None:
            found = {
                (method.lower(), route.path_format)
                for route in iter_route_contexts(app.routes)
                if isinstance(route.original_route, APIRoute)
                and _optional_security(route.dependant)
                for method in route.methods or ()
            }
        return found

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                security = operation.get("security")
                if (method, path) in optional() and security and {} not in security:
                    security.append({})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method the request's path has: of the routes whose template matches it, those
    with the fewest parameters, as a literal segment beats a parameter (`/posts/popular`
    is GET only, though `PATCH /posts/{post_id}` would take it for an id)."""
    matched: list[tuple[int, set[str]]] = []
    # Without the parameters of the route that did match: a match adds its own to them.
    scope = {**request.scope, "path_params": {}}
    for route in iter_route_contexts(app.routes):
        if not route.methods:
            continue
        match, child_scope = route.matches(scope)
        if match != Match.NONE:
            matched.append((len(child_scope.get("path_params", {})), route.methods))
    fewest = min((params for params, _ in matched), default=0)
    return sorted({m for params, methods in matched if params == fewest for m in methods})


def _list_every_allowed_method(app: FastAPI) -> None:
    shaped: Any = app.exception_handlers[HTTPException]

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(app, request))}
        response: Response = await shaped(request, exc)
        return response

    app.add_exception_handler(HTTPException, handler)


def _literal_paths_refuse_other_methods(app: FastAPI) -> None:
    """`PATCH /posts/popular` is a 405 (Allow: GET), not a 422 for an id that is no
    number: the router matched `PATCH /posts/{post_id}`, while the path is a route of its
    own that has no PATCH."""
    shaped: Any = app.exception_handlers[RequestValidationError]

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        path_params = request.scope.get("path_params")
        if path_params and any(e["loc"][:1] == ("path",) for e in exc.errors()):
            allowed = allowed_methods(app, request)
            if allowed and request.method not in allowed:
                refused = HTTPException(405, headers={"Allow": ", ".join(allowed)})
                http_error: Any = app.exception_handlers[HTTPException]
                response: Response = await http_error(request, refused)
                return response
        response = await shaped(request, exc)
        return response

    app.add_exception_handler(RequestValidationError, handler)


def _realworld_server_errors(app: FastAPI, realworld_prefix: str) -> None:
    native: Any = app.exception_handlers[Exception]

    async def handler(request: Request, exc: Exception) -> Response:
        response: Response = await native(request, exc)
        if not request.url.path.startswith(realworld_prefix):
            return response
        return JSONResponse(
            errors_body({"request": ["Internal server error"]}),
            response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() == "retry-after"},
        )

    app.add_exception_handler(Exception, handler)
