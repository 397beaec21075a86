"""The RealWorld error body, `{"errors": {"field": ["message"]}}`, for routes under /api,
worded as the API's spec writes it.

The app's handlers stay as they are for the native API; these wrap them and answer in the
RealWorld shape when the path is under the API's prefix, so that one exception raised by a
shared service (a 409 from registration, a 404 from a like) reads right in either API.
The services keep their own sentences for the native API; here the key says what the error
is about and the message is the spec's: `can't be blank`, `has already been taken`,
`invalid` (credentials), `is missing` (token), `forbidden`, `not found`. The README's
table of every route and error status is tested row by row (tests/realworld/test_errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastpost.errors import AppError

BLANK = "can't be blank"
TAKEN = "has already been taken"
INVALID = "is invalid"
TOKEN_MISSING = "is missing"

# What a shared service's error is about, in the API's words, by its code (which wins over
# the service's own field: the social service names its field "user_id", say).
_KEY_BY_CODE = {
    "invalid_credentials": "credentials",
    "post_not_found": "article",
    "article_not_found": "article",
    "user_not_found": "profile",
    "comment_not_found": "comment",
    "username_taken": "username",
    "email_taken": "email",
    # A registration that lost a race to an equal one: the database's unique index does
    # not say which of the two; the spec's example of a conflict names the username.
    "user_exists": "username",
    "follow_self": "profile",
}
# Where neither code nor field names it. Only an article's author check raises a 403
# without naming its resource (posts.service); a comment's names "comment".
_KEY_BY_STATUS = {401: "token", 403: "article", 404: "resource", 409: "username"}
# Anything else that names no field (a 429, say) is about the request as a whole.
_REQUEST = "request"
# The spec's message for each status, whatever the service's sentence.
_MESSAGE_BY_STATUS = {403: "forbidden", 404: "not found", 409: TAKEN}
_MESSAGE_BY_CODE = {
    "invalid_credentials": "invalid",
    # Unauthorized's own code, for a request that sent no token; every other 401 about the
    # token (forged, expired, its account gone) has a code of its own and answers INVALID.
    "not_authenticated": TOKEN_MISSING,
    "follow_self": "can't follow yourself",
}


def errors_body(errors: dict[str, list[str]]) -> dict[str, Any]:
    return {"errors": errors}


def _app_error(request: Request, exc: AppError) -> JSONResponse:
    status = exc.status_code
    key = _KEY_BY_CODE.get(exc.code) or exc.field or _KEY_BY_STATUS.get(status, _REQUEST)
    message = _MESSAGE_BY_CODE.get(exc.code) or _MESSAGE_BY_STATUS.get(status)
    if message is None:
        message = INVALID if status == 401 else exc.detail
    return JSONResponse(errors_body({key: [message]}), status, headers=exc.headers())


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def validation_message(error: Mapping[str, Any]) -> str:
    """One pydantic error in the spec's words (Rails' wording, which the spec's
    `can't be blank` comes from): a missing, null or empty value is blank; a bound says
    which."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing" or _is_blank(error.get("input")):
        return BLANK
    # A constraint on an annotated type (SafeText, say) fails as too_short/too_long, not
    # string_too_*: the input says whether it counted characters or items.
    unit = "characters" if isinstance(error.get("input"), str) else "items"
    if kind in ("string_too_short", "too_short"):
        return f"is too short (minimum is {ctx['min_length']} {unit})"
    if kind in ("string_too_long", "too_long"):
        return f"is too long (maximum is {ctx['max_length']} {unit})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "is not a number"
    bounds = {
        "greater_than_equal": ("greater than or equal to", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("less than or equal to", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, name = bounds[kind]
        return f"must be {words} {ctx[name]}"
    # A wrong type, a pattern, an address that is not one, a NUL character.
    return INVALID


def _envelope(request: Request) -> str:
    """The name of the route's body envelope ("user", "article", "comment"): what a
    request whose whole body is missing or unreadable lacks."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    if isinstance(model, type) and issubclass(model, BaseModel) and len(model.model_fields) == 1:
        return next(iter(model.model_fields))
    return "body"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        # ("body", "article", "title") -> "title"; ("query", "limit") -> "limit";
        # ("body", "article", "tagList", 3) -> "tagList"; ("body",) -> the envelope.
        loc = error["loc"]
        names = [str(part) for part in loc[1:] if isinstance(part, str)]
        if names:
            key = names[-1]
        elif loc and loc[0] == "body":
            key = _envelope(request)
        else:
            key = str(loc[0]) if loc else "body"
        message = validation_message(error)
        if message not in errors.setdefault(key, []):
            errors[key].append(message)
    return JSONResponse(errors_body(errors), 422)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Raised by the framework, not by a route: no such path or method, a body too large.
    key = "resource" if exc.status_code == 404 else _REQUEST
    message = _MESSAGE_BY_STATUS.get(exc.status_code)
    if message is None:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        errors_body({key: [message]}), exc.status_code, headers=getattr(exc, "headers", None)
    )


def install_realworld_errors(app: FastAPI, prefix: str) -> None:
    """Answer errors on paths under `prefix` in the RealWorld shape."""
    shaped = {
        AppError: _app_error,
        RequestValidationError: _validation_error,
        StarletteHTTPException: _http_error,
    }
    for exc_class, realworld_handler in shaped.items():
        native = app.exception_handlers.get(exc_class)

        async def handler(
            request: Request,
            exc: Exception,
            native: Any = native,
            realworld_handler: Any = realworld_handler,
        ) -> Response:
            if request.url.path.startswith(prefix):
                response: Response = realworld_handler(request, exc)
                return response
            response = await native(request, exc)
            return response

        app.add_exception_handler(exc_class, handler)
