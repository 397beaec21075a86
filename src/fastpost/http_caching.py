"""HTTP caching: ETag, Last-Modified, Cache-Control, conditional requests (304, 412).

Validators come from the cache entry (a version or a hash taken once when the bytes were
cached), so a conditional request is answered before anything is serialised, and from
tier 1 with no database query when the entry is there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from types import SimpleNamespace

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fastpost.cache import Entry, cache_key

JSON = "application/json"

# Anonymous public data: browsers and shared caches may keep it briefly, then revalidate.
PUBLIC_MAX_AGE = 5
PUBLIC = f"public, max-age={PUBLIC_MAX_AGE}"
# What depends on the caller must never be stored by a shared cache.
PRIVATE = "private, no-store"


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Does an If-None-Match (weak comparison) or If-Match (strong) header match `etag`?

    Handles `*`, comma-separated lists and `W/` tags (RFC 9110, 8.8.3.2)."""
    header = header.strip()
    if header == "*":
        return True
    if not weak and etag.startswith("W/"):
        return False
    target = _opaque(etag)
    for candidate in header.split(","):
        candidate = candidate.strip()
        if not weak and candidate.startswith("W/"):
            continue
        if _opaque(candidate) == target:
            return True
    return False


def not_modified(headers: Mapping[str, str], entry: Entry) -> bool:
    """True when the client's copy is current (If-None-Match wins over If-Modified-Since)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return etag_matches(if_none_match, entry.etag, weak=True)
    since = headers.get("if-modified-since")
    if since and entry.last_modified:
        try:
            return parsedate_to_datetime(entry.last_modified) <= parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


def cache_headers(entry: Entry, cache_control: str) -> dict[str, str]:
    headers = {"etag": entry.etag, "cache-control": cache_control, "vary": "Authorization"}
    if entry.last_modified:
        headers["last-modified"] = entry.last_modified
    return headers


def cached_response(
    headers: Mapping[str, str], entry: Entry, cache_control: str = PUBLIC
) -> Response:
    """200 with the cached bytes, or 304 with no body when the client's copy is current.
    A 304 carries the same ETag and Cache-Control as the 200 would."""
    response_headers = cache_headers(entry, cache_control)
    if not_modified(headers, entry):
        return Response(status_code=304, headers=response_headers)
    return Response(entry.body, headers=response_headers, media_type=JSON)


def private_response(body: bytes) -> Response:
    """A body that depends on the caller: not stored by shared caches."""
    return Response(
        body, media_type=JSON, headers={"cache-control": PRIVATE, "vary": "Authorization"}
    )


class CachedPostReads:
    """Answer an anonymous `GET /posts/{id}` straight from tier 1, before routing.

    The hottest read is a post by id, anonymously, from a warm cache. Routed through FastAPI,
    dependency solving and response handling cost several times the cache lookup itself
    (../shared/anchors.md: a FastAPI route returning bytes runs at 0.47x of bare Starlette).
    This pure ASGI middleware serves such a hit (200, or 304 when the client's copy is
    current) with the same bytes and headers the route would send; anything else, a miss
    included, goes on to the route, which loads and caches the post.
    """

    _PATH = re.compile(r"/posts/([1-9][0-9]{0,15})")
    # What the observability middleware reads from scope["route"] (its template) to label
    # the request as if routed. Not the route object: FastAPI 0.165 nests routes inside
    # included routers, out of reach of app.routes.
    _ROUTE = SimpleNamespace(path="/posts/{post_id}")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        match = self._PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        conditions: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                # What a logged-in caller sees depends on them: the route decides.
                await self.app(scope, receive, send)
                return
            if name in (b"if-none-match", b"if-modified-since"):
                conditions[name.decode()] = value.decode("latin-1")
        app = scope["app"]
        entry = app.state.cache.peek(cache_key("post", int(match.group(1))))
        if entry is None:
            await self.app(scope, receive, send)
            return
        # Metrics and logs label requests by route template, as if routed.
        scope["route"] = self._ROUTE
        headers = [
            (b"etag", entry.etag.encode()),
            (b"cache-control", PUBLIC.encode()),
            (b"vary", b"Authorization"),
        ]
        if entry.last_modified:
            headers.append((b"last-modified", entry.last_modified.encode()))
        if not_modified(conditions, entry):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-type", JSON.encode()))
        headers.append((b"content-length", str(len(entry.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": entry.body})
