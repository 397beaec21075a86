"""Profiling a request: `?profile=1` returns a pyinstrument profile instead of the body, and
`fastpost profile METHOD PATH` runs one request in-process under cProfile.

The middleware is only installed with `FASTPOST_PROFILING=1`, so it costs nothing otherwise.
Even then a profile shows code paths and timings an outsider should not see: it is served
to an authenticated admin (`fastpost admin grant USERNAME`; a bearer token, or RealWorld's
`Token`), or to a caller on loopback outside production. Anyone else gets the normal
answer, as if the parameter were not there.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import bindparam, select
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.db import Database, table_of
from fastpost.errors import Unauthorized
from fastpost.security import Tokens, token_in
from fastpost.users.models import User

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_users = table_of(User)
_IS_ADMIN = select(_users.c.is_admin).where(_users.c.id == bindparam("user_id"), _users.c.is_active)


def _asks_for_profile(query_string: bytes) -> bool:
    return b"profile=1" in query_string.split(b"&")


async def caller_is_admin(scope: Scope) -> bool:
    """Whether the request carries a valid token of an active admin."""
    token = token_in(Headers(scope=scope).get("authorization", ""), ("bearer", "token"))
    if token is None:
        return False
    state = scope["app"].state
    tokens: Tokens = state.tokens
    try:
        user_id = tokens.user_id(token)
    except Unauthorized:
        return False
    db: Database = state.db
    row = await db.fetch_one(_IS_ADMIN, {"user_id": user_id})
    return row is not None and bool(row["is_admin"])


class ProfileRequests:
    """Answer `?profile=1` with the pyinstrument HTML profile of the request."""

    def __init__(self, app: ASGIApp, *, loopback_allowed: bool) -> None:
        self.app = app
        self.loopback_allowed = loopback_allowed

    def _from_loopback(self, scope: Scope) -> bool:
        client = scope.get("client")
        return self.loopback_allowed and client is not None and client[0] in _LOOPBACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _asks_for_profile(scope.get("query_string", b"")):
            await self.app(scope, receive, send)
            return
        if not self._from_loopback(scope) and not await caller_is_admin(scope):
            await self.app(scope, receive, send)
            return
        from pyinstrument import Profiler

        async def discard(message: Message) -> None:
            pass

        profiler = Profiler(interval=0.0001, async_mode="enabled")
        profiler.start()
        try:
            await self.app(scope, receive, discard)
        finally:
            profiler.stop()
        response = HTMLResponse(profiler.output_html(), headers={"cache-control": "no-store"})
        await response(scope, receive, send)


def request_body(json_body: Any, headers: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
    """The headers and body of a request for send_request, with `json_body` as JSON."""
    request_headers = dict(headers)
    if json_body is None:
        return request_headers, b""
    request_headers["content-type"] = "application/json"
    return request_headers, json.dumps(json_body).encode()


async def send_request(
    app: Any, method: str, path: str, headers: Mapping[str, str], body: bytes
) -> int:
    """Call the ASGI app once with an HTTP request and return the response's status.

    A few lines instead of httpx's ASGITransport, so that `fastpost profile` needs nothing
    beyond fastpost's own dependencies.
    """
    raw_path, _, query = path.partition("?")
    header_list = [(b"host", b"profile")]
    header_list += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        header_list.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 0),
        "server": ("profile", 80),
    }
    sent_body = False
    finished = asyncio.Event()
    status = 0

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    await app(scope, receive, send)
    finished.set()
    return status


def _app_frames_first(profile: cProfile.Profile, top: int) -> str:
    """cProfile's report twice: fastpost's own functions, then everything, by cumulative
    time. The framework's frames (Starlette, FastAPI, asyncio) otherwise fill the top."""
    # The package's files, less this one (the driver's own frames lead every run).
    package = Path(__file__).resolve().parent.parent
    this_file = re.escape(f"observability{os.sep}profiling.py")
    package_dir = re.escape(str(package) + os.sep) + f"(?!{this_file})"
    out = io.StringIO()
    out.write(f"fastpost's own functions ({package}):\n")
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(package_dir, top)
    out.write("\nEvery function:\n")
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


async def profile_request(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    warmup: int = 1,
    speedscope: bool = False,
    top: int = 25,
) -> tuple[int, str]:
    """Run one request through the app in-process, after `warmup` unprofiled ones, and
    return its status and a report: cProfile's top functions by cumulative time (fastpost's
    own first), or with `speedscope` a pyinstrument profile in speedscope's JSON format."""
    request_headers, body = request_body(json_body, headers or {})
    async with app.router.lifespan_context(app):

        async def once() -> int:
            return await send_request(app, method, path, request_headers, body)

        for _ in range(warmup):
            await once()
        if speedscope:
            from pyinstrument import Profiler
            from pyinstrument.renderers import SpeedscopeRenderer

            profiler = Profiler(interval=0.0001, async_mode="enabled")
            profiler.start()
            status = await once()
            profiler.stop()
            return status, profiler.output(SpeedscopeRenderer())
        profile = cProfile.Profile()
        profile.enable()
        status = await once()
        profile.disable()
    return status, _app_frames_first(profile, top)
