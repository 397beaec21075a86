"""The counters of the request being served, shared by the middleware, the database hooks
(`statements`), the cache (`metrics.cache_event`) and the auth dependency."""

from __future__ import annotations

import contextvars


class RequestStats:
    """Counters of one request, shared by reference with the tasks it spawns; once it is
    served, also the record its metrics and access line are made from (see
    fastpost.observability.edge.Edge)."""

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "cache_seconds",
        "db_queries",
        "db_seconds",
        "duration",
        "ended",
        "method",
        "path",
        "request_id",
        "route",
        "started",
        "statements",
        "status",
        "user_id",
    )

    def __init__(self, request_id: bytes = b"", started: float = 0.0) -> None:
        # As sent in the X-Request-ID header: ASCII, nothing that JSON escapes. Bytes, as
        # the header and the access line want it; a log line decodes it.
        self.request_id = request_id
        self.started = started  # time.perf_counter() as it arrived
        self.db_queries = 0
        self.db_seconds = 0.0
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_seconds = 0.0
        self.user_id: int | None = None
        # Statement text -> times run, for the N+1 check; made by the first query (most
        # requests to a cached read make none).
        self.statements: dict[str, int] | None = None
        # Set as the request is answered and ends.
        self.status = 500
        # time.perf_counter() as it ended: a clock read the request needed anyway, where
        # time.time() would be one more; the access line turns it into a wall-clock time.
        self.ended = 0.0
        # Named by fastpost.observability.edge.Edge as it ends: what the metrics and access line
        # record.
        self.method = ""  # an HTTP method name, or "other"
        self.route = ""  # the route template, or served.UNMATCHED_ROUTE
        self.path = ""
        self.duration = 0.0  # seconds


current_request: contextvars.ContextVar[RequestStats | None] = contextvars.ContextVar(
    "fastpost_request_stats", default=None
)


def set_current_user(user_id: int) -> None:
    """Name the caller of the current request in its access log line."""
    stats = current_request.get()
    if stats is not None:
        stats.user_id = user_id
