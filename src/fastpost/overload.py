"""Load shedding: a bound on the requests inside a worker at once.

Past `max_in_flight`, a request is answered 503 with `Retry-After` at once, before its body
is read or any work starts. Without the bound a flood queues without end: each request
waits for a pooled connection or a hashing slot behind all the others until it times out
(issue 17: 1,000 connections on /feed gave 500s and a p99 of 10 s; on /auth/login the
workers grew from 257 MiB to 1 GiB). With
it, the requests a worker does take wait behind at most `max_in_flight` others, and the
rest cost it a counter test and a short answer that tells the client when to come back.

Probes are exempt (`/health`, `/metrics`): a load balancer that saw a busy worker as dead
would move its load onto the others and make it worse. Anonymous reads of the response
cache never get here (fastpost.http_caching.CachedPostReads sits outside): they wait on
nothing and cost no more than the 503 would.

A `ServiceUnavailable` raised by a layer within, outside the app's exception handlers (the
idempotency store's database calls), is answered here the same way: a 503, not a 500 that
closes the connection. tests/test_overload.py shows both.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.errors import ServiceUnavailable, error_body

# Short: a worker that was full a moment ago usually has room again within a second.
RETRY_AFTER_SECONDS = 1
EXEMPT_PREFIXES = ("/health", "/metrics")
BUSY = "The server is busy, try again shortly"


def _answer(body: bytes, retry_after: int) -> tuple[Message, Message]:
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class ShedOverload:
    """Pure ASGI middleware: at most `max_in_flight` requests pass at once; the others get
    503 with Retry-After, in the RealWorld error shape under `realworld_prefix` (about the
    "request", as fastpost.realworld.errors names what is about no field)."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, realworld_prefix: str) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.realworld_prefix = realworld_prefix
        self.in_flight = 0
        native = json.dumps(error_body(BUSY, "overloaded")).encode()
        realworld = json.dumps({"errors": {"request": [BUSY]}}).encode()
        self._busy = _answer(native, RETRY_AFTER_SECONDS)
        self._busy_realworld = _answer(realworld, RETRY_AFTER_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight and not scope["path"].startswith(EXEMPT_PREFIXES):
            start, body = (
                self._busy_realworld
                if scope["path"].startswith(self.realworld_prefix)
                else self._busy
            )
            # A fresh headers list: the layers outside add theirs to the message's list.
            await send({**start, "headers": list(start["headers"])})
            await send(body)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        except ServiceUnavailable as exc:
            await self._unavailable(scope, send, exc)
        finally:
            self.in_flight -= 1

    async def _unavailable(self, scope: Scope, send: Send, exc: ServiceUnavailable) -> None:
        """Answer a ServiceUnavailable that no exception handler saw, if nothing was sent."""
        if scope["path"].startswith(self.realworld_prefix):
            body = {"errors": {"request": [exc.detail]}}
        else:
            body = error_body(exc.detail, exc.code)
        start, message = _answer(json.dumps(body).encode(), exc.retry_after)
        try:
            await send(start)
        except RuntimeError:
            # The response had started (the server refuses a second start): too late for
            # an answer of our own; the server closes the connection.
            raise exc from None
        await send(message)
