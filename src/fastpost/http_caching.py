"""HTTP caching: ETag, Last-Modified, Cache-Control, conditional requests (304, 412).

Validators come from the cache entry (a version or a hash taken once when the bytes were
cached), so a conditional request is answered before anything is serialised, and from
tier 1 with no database query when the entry is there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from types import SimpleNamespace

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fastpost.cache import Entry

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
    """Answer an anonymous `GET /posts/{id}`, `GET /api/articles/{slug}` or `GET /api/tags`
    straight from tier 1, before routing.

    The hottest reads are a post (or RealWorld article) by id or slug and the tags,
    anonymously, from a warm cache. Routed through FastAPI, dependency solving and response
    handling cost several times the cache lookup itself (../shared/anchors.md: a FastAPI
    route returning bytes runs at 0.47x of bare Starlette). This pure ASGI middleware serves
    such a hit (200, or 304 when the client's copy is current) with the same bytes and
    headers the route would send; anything else, a miss included, goes on to the route,
    which loads and caches the entry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Imported here: the services import this module. Keys come from the functions the
        # routes' services use, so that both always name an entry the same.
        from fastpost.posts.service import post_key
        from fastpost.realworld.service import article_key, tags_key

        # (path, key of the entry it shows, the route template it is labelled with: what
        # the observability middleware reads from scope["route"] as if routed; not the route
        # object, since FastAPI 0.165 nests routes inside included routers, out of reach of
        # app.routes). A slug is at most 100 characters (realworld.router.Slug); "feed"
        # names no article (every slug ends in a random suffix), so it finds nothing.
        self._reads: tuple[tuple[re.Pattern[str], Callable[[str], str], SimpleNamespace], ...] = (
            (
                re.compile(r"/posts/([1-9][0-9]{0,15})"),
                lambda found: post_key(int(found)),
                SimpleNamespace(path="/posts/{post_id}"),
            ),
            (
                re.compile(r"/api/articles/([^/]{1,100})"),
                article_key,
                SimpleNamespace(path="/api/articles/{slug}"),
            ),
            (re.compile(r"/api/(tags)"), lambda _: tags_key(), SimpleNamespace(path="/api/tags")),
        )

    def _entry_key(self, path: str) -> tuple[str, SimpleNamespace] | None:
        for pattern, key_of, route in self._reads:
            match = pattern.fullmatch(path)
            if match is not None:
                return key_of(match.group(1)), route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        found = self._entry_key(scope["path"])
        if found is None:
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
        key, route = found
        entry = scope["app"].state.cache.peek(key)
        if entry is None:
            await self.app(scope, receive, send)
            return
        # Metrics and logs label requests by route template, as if routed.
        scope["route"] = route
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
