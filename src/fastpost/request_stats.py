"""The counters of the request being served, shared by the middleware, the database hooks
(`querylog`), the cache (`metrics.cache_event`) and the auth dependency."""

from __future__ import annotations

import contextvars


class RequestStats:
    """Counters of one request, shared by reference with the tasks it spawns."""

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "cache_seconds",
        "db_queries",
        "db_seconds",
        "request_id",
        "statements",
        "user_id",
    )

    def __init__(self, request_id: str = "") -> None:
        self.request_id = request_id
        self.db_queries = 0
        self.db_seconds = 0.0
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_seconds = 0.0
        self.user_id: int | None = None
        self.statements: dict[str, int] = {}


current_request: contextvars.ContextVar[RequestStats | None] = contextvars.ContextVar(
    "fastpost_request_stats", default=None
)


def set_current_user(user_id: int) -> None:
    """Name the caller of the current request in its access log line."""
    stats = current_request.get()
    if stats is not None:
        stats.user_id = user_id
