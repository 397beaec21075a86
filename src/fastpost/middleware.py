"""Pure ASGI middleware. (Starlette's BaseHTTPMiddleware costs a task and a memory stream
per request and breaks contextvars, so none of it here.)"""

from __future__ import annotations

import json
import re
import time
from random import getrandbits

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.errors import error_body
from fastpost.logging import access
from fastpost.metrics import (
    HTTP_METHODS,
    UNMATCHED_ROUTE,
    in_flight,
    request_durations,
    requests_counted,
)
from fastpost.querylog import check_n_plus_one
from fastpost.request_stats import RequestStats, current_request


class BodySizeLimit:
    """Answer 413 for request bodies over `max_bytes`, before the app reads them whole.

    A declared Content-Length over the limit is refused at once; a chunked body is counted
    as it streams in and cut off where it crosses the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await self._refuse(send)
                    return
                break

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing as it is (any
                    # other error there becomes a 400) and reaches the shared 413 handler.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body(self._detail(), "payload_too_large")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# X-Request-ID values we pass on as they are: short, and nothing that could forge a log line.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")
_SERVER_TIMING = b"db;dur=%.2f, cache;dur=%.2f, app;dur=%.2f, total;dur=%.2f"


class Observability:
    """Request id, metrics, `Server-Timing`, the access log line and the N+1 check.

    One middleware for all of them: each layer of ASGI wrapping costs a coroutine frame and
    a `send` closure per request, and they need the same clock readings anyway. Metrics go
    to per-process tallies (see fastpost.metrics): a dict update per request.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = True, n_plus_one_threshold: int = 0):
        self.app = app
        self.access_log = access_log
        self.n_plus_one_threshold = n_plus_one_threshold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _SANE_REQUEST_ID.fullmatch(value):
                    request_id = value
                break
        if not request_id:
            # An id, not a secret: no system call (os.urandom is one) on every request.
            request_id = b"%016x" % getrandbits(64)
        rid = request_id.decode("latin-1")
        # The request id rides on the request's stats, which every log line can reach (see
        # fastpost.logging.add_request_id): no structlog context to bind and reset per request.
        stats = RequestStats(rid)
        stats_token = current_request.set(stats)
        status = 500
        # Counted by route when metrics are flushed: the router names the route later.
        in_flight[id(scope)] = scope

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - start) * 1000
                db_ms = stats.db_seconds * 1000
                cache_ms = stats.cache_seconds * 1000
                timing = _SERVER_TIMING % (
                    db_ms,
                    cache_ms,
                    elapsed_ms - db_ms - cache_ms,
                    elapsed_ms,
                )
                # A new list (a cached Response hands us its own list every time) in the
                # message dict, which its sender built for this one call.
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id),
                    (b"server-timing", timing),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - start
            del in_flight[id(scope)]
            route_object = scope.get("route")
            route = route_object.path if route_object is not None else UNMATCHED_ROUTE
            method = scope["method"]
            if method not in HTTP_METHODS:
                method = "other"
            requests_counted.inc((method, route, str(status)))
            request_durations.observe((method, route), duration)
            if self.n_plus_one_threshold and stats.db_queries > self.n_plus_one_threshold:
                check_n_plus_one(stats, route, self.n_plus_one_threshold)
            if self.access_log:
                access.request(stats, request_id, method, route, scope["path"], status, duration)
            current_request.reset(stats_token)
