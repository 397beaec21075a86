"""The bare Starlette baseline: constant bytes, no database, no serialisation.

What uvicorn and a framework can do on this machine, served the same way as fastpost
(same uvicorn flags, workers and pinning), so that every figure has a ratio beside it.
Configured by environment variables, because uvicorn builds the app in its own process:

    BENCH_BODY                           file whose bytes answer every path (constant_body_app)
    BENCH_LIST_BODY, BENCH_DETAIL_BODY   files answering /posts/ and /posts/{id} (constant_app)

    uvicorn fastpost.bench.baseline:constant_body_app --factory --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def constant_app() -> Starlette:
    """Serve the bodies in BENCH_LIST_BODY and BENCH_DETAIL_BODY, whatever the query."""
    list_body = Path(os.environ["BENCH_LIST_BODY"]).read_bytes()
    detail_body = Path(os.environ["BENCH_DETAIL_BODY"]).read_bytes()

    async def list_posts(request: Request) -> Response:
        return Response(list_body, media_type=JSON)

    async def read_post(request: Request) -> Response:
        return Response(detail_body, media_type=JSON)

    return Starlette(
        routes=[
            Route("/posts/", list_posts),
            Route("/posts/{post_id:int}", read_post),
        ]
    )


def constant_body_app() -> Starlette:
    """Answer every path and method with the bytes of BENCH_BODY (one route, one match),
    sending back the request's X-Request-ID as fastpost does: wrk's per-route figures
    (lua/requests.lua) find each answer's request by it."""
    body = Path(os.environ["BENCH_BODY"]).read_bytes()

    async def constant(request: Request) -> Response:
        for name, value in request.scope["headers"]:
            if name == b"x-request-id":
                return Response(
                    body, media_type=JSON, headers={"x-request-id": value.decode("latin-1")}
                )
        return Response(body, media_type=JSON)

    return Starlette(routes=[Route("/{path:path}", constant, methods=METHODS)])


def padded_json(size: int) -> bytes:
    """Return a JSON object of exactly `size` bytes (at least 12)."""
    shell = b'{"pad":""}'
    return shell[:-2] + b"x" * max(size - len(shell), 0) + shell[-2:]
