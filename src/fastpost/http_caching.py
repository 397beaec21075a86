"""HTTP caching: ETag, Last-Modified, Cache-Control, conditional requests (304, 412).

Validators come from the cache entry (a version or a hash taken once when the bytes were
cached), so a conditional request is answered before anything is serialised, and from
tier 1 with no database query when the entry is there.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.cache import Entry

JSON = "application/json"

# The policy, route by route: README, "HTTP caching policy"; tests/cache/test_http_policy.py
# reads through a client that honours it. Anonymous public data: any cache may store it,
# and must ask again before each use (a 304 from tier 1 when nothing changed), so that no
# reader is shown a page older than the last write, its own included.
PUBLIC = "public, no-cache"
# What depends on the caller (or carries a secret, as a login's token): stored by no cache.
PRIVATE = "private, no-store"
# A response that states no policy of its own (an anonymous page past the first, a 404):
# no validator, so asking again means reading it again; never served from a cache unasked.
UNSTATED = "no-cache"


_PUBLIC = PUBLIC.encode()
_PRIVATE = PRIVATE.encode()
_UNSTATED = UNSTATED.encode()
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_JSON = JSON.encode()
# How many paths CachedPostReads remembers what they name (a few hundred bytes each).
KNOWN_PATHS = 1024

Header = tuple[bytes, bytes]


def public_cache_control(shared_max_age_seconds: int) -> str:
    """PUBLIC, or with `s-maxage` when shared caches may keep a response that long: browsers
    still revalidate every time (max-age=0, must-revalidate), shared caches after that."""
    if not shared_max_age_seconds:
        return PUBLIC
    return f"public, max-age=0, must-revalidate, s-maxage={shared_max_age_seconds}"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """`moment` as an HTTP date (RFC 9110 5.6.7, IMF-fixdate), as email.utils.format_datetime
    writes it (tests/cache/test_http_caching.py), in half its time: every uncached read that
    builds an entry formats one."""
    t = moment.astimezone(UTC)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


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
    if header == etag:  # a client echoing the tag it was sent: every revalidation we see
        return True
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


def entry_headers(entry: Entry, cache_control: bytes) -> list[tuple[bytes, bytes]]:
    """The validators and policy of a cached entry's response, 200 or 304, as raw headers:
    what the route (cached_response) and the warm-read middleware (CachedPostReads) both
    send, so that a hit answered before routing and a miss answered by the route agree
    (tests/cache/test_warm_reads.py)."""
    headers = [
        (b"etag", entry.etag.encode()),
        (b"cache-control", cache_control),
        (b"vary", b"Authorization"),
    ]
    if entry.last_modified:
        headers.append((b"last-modified", entry.last_modified.encode()))
    return headers


def cached_response(
    headers: Mapping[str, str], entry: Entry, cache_control: str = PUBLIC
) -> Response:
    """200 with the cached bytes, or 304 with no body when the client's copy is current.
    A 304 carries the same ETag and Cache-Control as the 200 would."""
    if not_modified(headers, entry):
        response = Response(status_code=304)
    else:
        response = Response(entry.body, media_type=JSON)
    response.raw_headers.extend(entry_headers(entry, cache_control.encode()))
    return response


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
    handling cost several times the cache lookup itself (a FastAPI route that only returns
    ready bytes serves about half the requests per second of bare Starlette;
    benchmarks/bench_cache.py measures a warm hit served here against bare Starlette
    answering the same bytes, and benchmarks/bench_fixed_cost.py the same hit's CPU per
    request in process). This pure ASGI middleware serves such a hit (200, or 304 when the
    client's copy is current) with the same bytes and headers the route would send; anything
    else, a miss included, goes on to the route, which loads and caches the entry.

    It also sees that every response states its caching policy: one without Cache-Control
    gets PRIVATE when the request carries a token or is not a GET or HEAD (what answers
    it may depend on the caller, or hold a secret, as a login's token), UNSTATED otherwise;
    with `shared_max_age_seconds`, the routes' PUBLIC becomes public_cache_control's.
    """

    def __init__(
        self, app: ASGIApp, *, shared_max_age_seconds: int = 0, serve_hits: bool = True
    ) -> None:
        self.app = app
        self._public = public_cache_control(shared_max_age_seconds).encode()
        self._rewrite_public = self._public != _PUBLIC
        # Imported here: the services import this module. Keys come from the functions the
        # routes' services use, so that both always name an entry the same.
        from fastpost.cache_keys import article as article_key
        from fastpost.cache_keys import post as post_key
        from fastpost.cache_keys import realworld_tags as tags_key

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
        if not serve_hits:  # the cache is off: no entry to look for, on any request
            self._reads = ()
        # What the paths asked for lately name: an entry's key and route, or None for a path
        # none of the reads above serves. A hit then costs one lookup instead of a regular
        # expression and a key joined from its parts: with the headers kept per entry
        # (_answers), the most of what a hit paid here above bare Starlette's answer
        # (benchmarks/bench_fixed_cost.py measures a hit's CPU in process). Cleared when full,
        # so that endless distinct paths cost a bounded amount of memory.
        self._known: dict[str, tuple[str, SimpleNamespace] | None] = {}
        # Where an entry keeps this layer's answers to it (see _answers): per policy, since
        # apps with different policies may meet the same entry in tests.
        self._answers_name = "http:" + self._public.decode()

    def _entry_key(self, path: str) -> tuple[str, SimpleNamespace] | None:
        try:
            return self._known[path]
        except KeyError:
            pass
        found = None
        for pattern, key_of, route in self._reads:
            match = pattern.fullmatch(path)
            if match is not None:
                found = key_of(match.group(1)), route
                break
        if len(self._known) >= KNOWN_PATHS:
            self._known.clear()
        self._known[path] = found
        return found

    def _answers(self, entry: Entry) -> tuple[tuple[Header, ...], tuple[Header, ...]]:
        """The headers of this layer's 304 and 200 for `entry`, made the first time the entry
        is served here and kept with it (Entry.derived): a hit sends them as they are."""
        answers: tuple[tuple[Header, ...], tuple[Header, ...]] | None = entry.derived.get(
            self._answers_name
        )
        if answers is None:
            revalidated = tuple(entry_headers(entry, self._public))
            served = (
                *revalidated,
                (b"content-type", _JSON),
                (b"content-length", b"%d" % len(entry.body)),
            )
            answers = entry.derived[self._answers_name] = (revalidated, served)
        return answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET":
            await self.app(scope, receive, self._stating_policy(scope, send))
            return
        found = self._entry_key(scope["path"])
        if found is None:
            await self.app(scope, receive, self._stating_policy(scope, send))
            return
        conditions: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                # What a logged-in caller sees depends on them: the route decides.
                await self.app(scope, receive, self._stating_policy(scope, send, _PRIVATE))
                return
            if name in (b"if-none-match", b"if-modified-since"):
                conditions[name.decode()] = value.decode("latin-1")
        key, route = found
        entry = scope["app"].state.cache.peek(key)
        if entry is None:
            await self.app(scope, receive, self._stating_policy(scope, send, _UNSTATED))
            return
        # Metrics and logs label requests by route template, as if routed.
        scope["route"] = route
        revalidated, served = self._answers(entry)
        # Each message gets a list of its own: whoever sends it on may change it.
        if not_modified(conditions, entry):
            await send({"type": "http.response.start", "status": 304, "headers": [*revalidated]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [*served]})
        await send({"type": "http.response.body", "body": entry.body})

    def _stating_policy(self, scope: Scope, send: Send, unstated: bytes | None = None) -> Send:
        """`send`, seeing that the response states a caching policy (see the class)."""
        if unstated is None:
            unstated = _UNSTATED
            if scope["method"] not in _SAFE_METHODS:
                unstated = _PRIVATE
            else:
                for name, _ in scope["headers"]:
                    if name == b"authorization":
                        unstated = _PRIVATE
                        break
        public = self._public if self._rewrite_public else None

        # A plain function returning the server's own awaitable, as
        # fastpost.observability.edge.Edge's.
        def send_with_policy(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                for index, (name, value) in enumerate(headers):
                    if name == b"cache-control":
                        if public is not None and value == _PUBLIC:
                            # A new list: a Response may hand over a list it keeps.
                            changed = list(headers)
                            changed[index] = (name, public)
                            message["headers"] = changed
                        break
                else:
                    message["headers"] = [*headers, (b"cache-control", unstated)]
            return send(message)

        return send_with_policy
