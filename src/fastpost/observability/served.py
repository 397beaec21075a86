"""Served requests, held until their metrics and access lines are made a batch at a time.

The observability layer (fastpost.observability.edge.Edge) ends each request by naming it
(route template, method, path, duration) on its record (RequestStats) and appending the
record to its app's `ServedRequests.records`. Counting it and formatting its access line
happen later, in `hand_on`, for a whole batch at once: code run in a loop over a batch stays
in the CPU's caches, while the same code run once per request, between the server's and the
app's own work, finds it cold every time and costs several times as much (see Edge).

Who makes something of a batch is added to `sinks` by create_app: the metrics count the
requests (fastpost.observability.metrics.count_served), the access log writes their lines
(fastpost.observability.access_log). Each sink sees every record once. Each app has its own
ServedRequests (on its Observability): two apps in one process never see each other's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastpost.observability.request_stats import RequestStats

# Requests no route matched share this label: raw paths would make a series per scanner probe.
UNMATCHED_ROUTE = "unmatched"
# Other methods share the label "other", for the same reason.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# While an app serves (its lifespan runs: start_batching), records are handed on
# SERVING_BATCH at a time, and by the periodic flushes of the metrics and the access log.
# Outside of that (an app called without its lifespan) each is handed on as it ends.
SERVING_BATCH = 256


def route_of(scope: Mapping[str, Any]) -> str:
    """The label of the route that served this request: its template, never the raw path."""
    route = scope.get("route")
    return route.path if route is not None else UNMATCHED_ROUTE


def method_of(scope: Mapping[str, Any]) -> str:
    """The label of the request's method: its name, or "other"."""
    method: str = scope["method"]
    return method if method in HTTP_METHODS else "other"


class ServedRequests:
    """One app's served requests not handed on yet, and the sinks they go to."""

    __slots__ = ("batch_size", "records", "sinks")

    def __init__(self) -> None:
        self.batch_size = 1
        # Rebound, not emptied, by hand_on: read it at each use.
        self.records: list[RequestStats] = []
        self.sinks: list[Callable[[list[RequestStats]], None]] = []

    def hand_on(self) -> None:
        """Give the requests served so far to every sink."""
        batch = self.records
        if not batch:
            return
        self.records = []
        for sink in self.sinks:
            sink(batch)

    def start_batching(self) -> None:
        """Hand records on SERVING_BATCH at a time from now on."""
        self.batch_size = SERVING_BATCH

    def stop_batching(self) -> None:
        """Hand on what is held, and each record as it comes from now on."""
        self.batch_size = 1
        self.hand_on()
