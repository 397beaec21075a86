"""Query strings validated by one pydantic call, for the hottest list routes.

FastAPI (0.165) validates a query model field by field and, per request, inspects each
field's annotation again (`field_annotation_is_sequence` and friends): about a quarter of
the dependency solving of `GET /api/articles` when it was validated that way (a route still
validated by FastAPI shows them: `fastpost profile GET /users/1/followers` lists
`request_params_to_args` and its callees). `query_model(M)` validates the whole query
string with `M.model_validate` instead, raises the same RequestValidationError (so the same
422s), and documents the parameters in OpenAPI from the model's JSON schema
(`openapi_parameters(M)` on the route).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M], request: Request) -> M:
    """The request's query string validated against `model`; a RequestValidationError (the
    app's 422) naming each field that fails."""
    try:
        # A repeated parameter counts once, its last value, as FastAPI's Query does.
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def query_model(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency returning the request's query string validated against `model`."""

    # async, though it never awaits: FastAPI runs a plain `def` dependency in a worker
    # thread, a thread hop per request.
    async def parse(request: Request) -> M:
        return parse_query(model, request)

    return parse


def openapi_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring the model's fields as query parameters."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return {
        "parameters": [
            {"name": name, "in": "query", "required": name in required, "schema": field}
            for name, field in schema["properties"].items()
        ]
    }
