"""Pure ASGI middleware. (Starlette's BaseHTTPMiddleware costs a task and a memory stream
per request and breaks contextvars, so none of it here.)"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.errors import error_body
from fastpost.observability.metrics import in_flight
from fastpost.observability.request_stats import RequestStats, current_request
from fastpost.observability.served import HTTP_METHODS, UNMATCHED_ROUTE, ServedRequests
from fastpost.observability.statements import check_n_plus_one
from fastpost.security_headers import SecurityHeaders

# X-Request-ID values we pass on as they are: short, and nothing that could forge a log line.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")
_SERVER_TIMING = b"db;dur=%.2f, cache;dur=%.2f, app;dur=%.2f, total;dur=%.2f"
# A request that spent no time on the database or the cache (a health check, a 304, a hit of
# the response cache) and took under 10 ms takes its header from this table, by hundredths
# of a millisecond: no float to format (benchmarks/bench_observability.py measures the
# layer as a whole; fastpost.observability.served says why work done once per request costs
# more than the same work in a loop).
_SERVER_TIMING_APP_ONLY = [
    (b"server-timing", b"db;dur=0, cache;dur=0, app;dur=%.2f, total;dur=%.2f" % (ms, ms))
    for ms in (hundredths / 100 for hundredths in range(1000))
]
# Versions in which a request with neither Content-Length nor Transfer-Encoding has no body.
_HTTP1 = frozenset({"1.0", "1.1"})
# Request ids not given out yet: 16 hex digits each, from os.urandom, made a batch at a time
# (a system call per request would cost more than the rest of the id's work).
# Process-wide: random ids, which any app of the process may take; nothing is recorded here.
_fresh_request_ids: list[bytes] = []
_REQUEST_IDS_PER_BATCH = 1024


def _more_request_ids() -> bytes:
    """Refill _fresh_request_ids and take one."""
    # Split by bytes.hex itself (a space every 8 bytes): half the time of slicing in Python
    # (python -m timeit of the two).
    _fresh_request_ids.extend(os.urandom(8 * _REQUEST_IDS_PER_BATCH).hex(" ", 8).encode().split())
    return _fresh_request_ids.pop()


async def _answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer an error no route handled with the app's handler for 500 (its error shape)."""
    app = scope.get("app")
    handler = None
    # As Starlette's build_middleware_stack picks the handler for its server error layer.
    for key, value in getattr(app, "exception_handlers", {}).items():
        if key in (500, Exception):
            handler = value
    if handler is None:
        raise exc
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)


class Edge:
    """The outermost layer, which every request passes first: the body limit, and with
    `observe` on, the request's id, its metrics, `Server-Timing` (where `server_timing`),
    its access line and the N+1 check; and the security headers (fastpost.security_headers)
    either way.

    One layer for all of it: on a hot path every layer counts (a coroutine per request, and
    a closure and a call per message when it watches the response), and these need the
    same pass over the headers and the same clock readings. The body limit is needed with
    or without observability, so `observe=False` (the baseline of
    benchmarks/bench_observability.py) keeps the layer and drops only the observing; its
    security headers stay as well.

    Body limit: a declared Content-Length over `max_body_bytes` is refused at once (413;
    a cross-origin one through the app, for its CORS headers: see _refuse); a body of
    unknown length is counted as it streams in, and cut off where it crosses the
    limit. An HTTP/1 request with neither header has no body: its `receive` is passed on
    as it is.

    What a request leaves for its metrics and access line is its stats (RequestStats),
    filled in as it ends and appended to the records of `served` (its app's
    ServedRequests, bound here once rather than looked up on the app per request): the
    metrics count them and the access log formats their lines a batch at a time, so that
    the request path itself does the least it can.

    Measured together (benchmarks/bench_observability.py's shared-core method, 3 fresh
    pairs of servers x 3 runs): served `GET /health` answered 3.4% more requests per second
    (1.007-1.051) than with the body limit and the observing in two layers, each request
    counted and its line formatted as it ended; the baseline without observing did not
    move (0.996).
    Batches of 16 instead of 256 cost 2%.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        observe: bool = True,
        n_plus_one_threshold: int = 0,
        security_headers: SecurityHeaders | None = None,
        server_timing: bool = True,
        served: ServedRequests | None = None,
    ) -> None:
        self.app = app
        # Where served requests go: an app's own (create_app), or nowhere much (a bare Edge).
        self.served = served if served is not None else ServedRequests()
        self.max_body_bytes = max_body_bytes
        self.observe = observe
        self.n_plus_one_threshold = n_plus_one_threshold
        # Added to every response as they are: made once (fastpost.security_headers).
        headers = security_headers or SecurityHeaders()
        self._page_headers = headers.pages
        self._default_headers = headers.default
        self.server_timing = server_timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = declared_length = None
        streamed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared_length = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"transfer-encoding":
                streamed = True
        refused = False
        if declared_length is not None:
            try:
                refused = int(declared_length) > self.max_body_bytes
            except ValueError:  # the server rejects it first; count what arrives anyway
                receive = self._limited(receive)
        elif streamed or scope.get("http_version") not in _HTTP1:
            receive = self._limited(receive)
        if not self.observe:
            # The security headers are the product's, not observing: the baseline of
            # benchmarks/bench_observability.py sends them too, so that it measures observing.
            secured = self._page_headers.get(scope["path"], self._default_headers)

            def send_secured(message: Message) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), *secured]
                return send(message)

            if refused:
                await self._refuse(scope, receive, send_secured)
            else:
                await self.app(scope, receive, send_secured)
            return

        if request_id is None or not _SANE_REQUEST_ID.fullmatch(request_id):
            fresh = _fresh_request_ids
            request_id = fresh.pop() if fresh else _more_request_ids()
        # The request id rides on the request's stats, which every log line can reach (see
        # fastpost.observability.logging.add_request_id): no structlog context to bind and
        # reset per request.
        stats = RequestStats(request_id, start)
        stats_token = current_request.set(stats)
        # Counted by route when metrics are flushed: the router names the route later.
        in_flight[stats] = scope
        extra_headers = self._page_headers.get(scope["path"], self._default_headers)
        server_timing = self.server_timing
        started = False

        # A plain function that returns the server's own awaitable: the app awaits that
        # directly, with no coroutine of ours made and stepped through for each message.
        # It reads the request's id and start from `stats`, its only other variable.
        def send_with_headers(message: Message) -> Awaitable[None]:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                stats.status = message["status"]
                if not server_timing:
                    message["headers"] = [
                        *message.get("headers", ()),
                        (b"x-request-id", stats.request_id),
                        *extra_headers,
                    ]
                    return send(message)
                elapsed_ms = (time.perf_counter() - stats.started) * 1000
                db_seconds = stats.db_seconds
                cache_seconds = stats.cache_seconds
                hundredths = int(elapsed_ms * 100 + 0.5)
                if db_seconds or cache_seconds or hundredths >= 1000:
                    db_ms = db_seconds * 1000
                    cache_ms = cache_seconds * 1000
                    timing = (
                        b"server-timing",
                        _SERVER_TIMING
                        % (db_ms, cache_ms, elapsed_ms - db_ms - cache_ms, elapsed_ms),
                    )
                else:
                    timing = _SERVER_TIMING_APP_ONLY[hundredths]
                # A new list (a cached Response hands us its own list every time) in the
                # message dict, which its sender built for this one call.
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", stats.request_id),
                    timing,
                    *extra_headers,
                ]
            return send(message)

        try:
            if refused:
                await self._refuse(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            # Answered here rather than by Starlette's server error layer outside: inside,
            # the error is logged with the request's id and its 500 carries the headers
            # every response carries; and it is logged once (the server would log the
            # error that layer re-raises a second time).
            await _answer_error(scope, receive, send_with_headers, exc)
        finally:
            stats.ended = ended = time.perf_counter()
            stats.duration = ended - start
            del in_flight[stats]
            # Named here, while the scope is in the CPU's caches, not in the batch where
            # each scope is a cache miss (the layer's cost as a whole:
            # benchmarks/bench_observability.py). As served.route_of and served.method_of
            # name them, without two calls.
            route = scope.get("route")
            stats.route = route.path if route is not None else UNMATCHED_ROUTE
            method = scope["method"]
            stats.method = method if method in HTTP_METHODS else "other"
            stats.path = scope["path"]
            if self.n_plus_one_threshold and stats.db_queries > self.n_plus_one_threshold:
                check_n_plus_one(stats, stats.route, self.n_plus_one_threshold)
            # The request is over: what a batch's sinks do below is none of its doing.
            current_request.reset(stats_token)
            # Its metrics and access line are made later, a batch at a time.
            served = self.served
            records = served.records
            records.append(stats)
            if len(records) >= served.batch_size:
                served.hand_on()

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        max_bytes = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise self._too_large()
            return message

        return limited_receive

    def _too_large(self) -> HTTPException:
        # An HTTPException passes through FastAPI's body parsing as it is (any other error
        # there becomes a 400) and reaches the shared 413 handler.
        return HTTPException(413, f"Request body is larger than {self.max_body_bytes} bytes")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 to a request whose declared body is too large, without reading it."""
        if any(name == b"origin" for name, _ in scope["headers"]):
            # A browser's cross-origin request: its answer must pass the CORS layer within,
            # or the page sees a CORS failure instead of the 413. The route's first read of
            # the body fails, and the shared 413 handler answers.
            async def refusing_receive() -> Message:
                raise self._too_large()

            await self.app(scope, refusing_receive, send)
            return
        # Imported here: only a refused body needs it (the RealWorld router imports much).
        from fastpost.realworld.errors import errors_body
        from fastpost.realworld.router import PREFIX as REALWORLD_PREFIX

        detail = self._too_large().detail
        if scope["path"].startswith(REALWORLD_PREFIX):  # that API's own error shape
            shaped = errors_body({"request": [detail]})
        else:
            shaped = error_body(detail, "payload_too_large")
        body = json.dumps(shaped).encode()
        response = Response(body, 413, {"connection": "close"}, media_type="application/json")
        await response(scope, receive, send)
