"""The RealWorld error body, `{"errors": {"field": ["message"]}}`, for routes under /api.

The app's handlers stay as they are for the native API; these wrap them and answer in the
RealWorld shape when the path is under the API's prefix, so that one exception raised by a
shared service (a 409 from registration, a 404 from a like) reads right in either API.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastpost.errors import AppError

# Where the spec names no field: the token for 401, the resource otherwise.
_DEFAULT_FIELD = {401: "token", 403: "resource", 404: "resource", 409: "resource"}


def errors_body(errors: dict[str, list[str]]) -> dict[str, Any]:
    return {"errors": errors}


def _app_error(exc: AppError) -> JSONResponse:
    field = exc.field or _DEFAULT_FIELD.get(exc.status_code, "body")
    return JSONResponse(errors_body({field: [exc.detail]}), exc.status_code, headers=exc.headers())


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors: dict[str, list[str]] = defaultdict(list)
    for error in exc.errors():
        # ("body", "article", "title") -> "title"; ("query", "limit") -> "limit"
        names = [str(part) for part in error["loc"][1:] if isinstance(part, str)]
        field = names[-1] if names else str(error["loc"][0])
        errors[field].append(error["msg"])
    return JSONResponse(errors_body(dict(errors)), 422)


def _http_error(exc: StarletteHTTPException) -> JSONResponse:
    field = _DEFAULT_FIELD.get(exc.status_code, "request")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        errors_body({field: [detail]}), exc.status_code, headers=getattr(exc, "headers", None)
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
                response: Response = realworld_handler(exc)
                return response
            response = await native(request, exc)
            return response

        app.add_exception_handler(exc_class, handler)
