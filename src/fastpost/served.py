"""Served requests, held until their metrics and access lines are made a batch at a time.

The observability middleware (fastpost.middleware.Edge) ends each request by naming it
(route template, method, path, duration) on its record (RequestStats) and appending the
record to `records`. Counting it and formatting its access line happen later, in
`hand_on`, for a whole batch at once: code run in a loop over a batch stays in the CPU's
caches, while the same code run once per request, between the server's and the app's own
work, finds it cold every time and costs several times as much (see Edge).

Who makes something of a batch adds a function of it to `sinks`: fastpost.metrics counts
the requests, fastpost.logging writes their access lines. Each sink sees every record once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastpost.request_stats import RequestStats

# Requests no route matched share this label: raw paths would make a series per scanner probe.
UNMATCHED_ROUTE = "unmatched"
# Other methods share the label "other", for the same reason.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# While an app serves (its lifespan runs: start_batching), records are handed on
# SERVING_BATCH at a time, and by the periodic flushes of the metrics and the access log.
# Outside of that (an app called without its lifespan) each is handed on as it ends.
SERVING_BATCH = 256
batch_size = 1
# Served requests not handed on yet (rebound, not emptied, by hand_on: read it at each use).
records: list[RequestStats] = []
sinks: list[Callable[[list[RequestStats]], None]] = []


def route_of(scope: Mapping[str, Any]) -> str:
    """The label of the route that served this request: its template, never the raw path."""
    route = scope.get("route")
    return route.path if route is not None else UNMATCHED_ROUTE


def method_of(scope: Mapping[str, Any]) -> str:
    """The label of the request's method: its name, or "other"."""
    method: str = scope["method"]
    return method if method in HTTP_METHODS else "other"


def hand_on() -> None:
    """Give the requests served so far to every sink."""
    global records
    if not records:
        return
    batch, records = records, []
    for sink in sinks:
        sink(batch)


def start_batching() -> None:
    """Hand records on SERVING_BATCH at a time from now on."""
    global batch_size
    batch_size = SERVING_BATCH


def stop_batching() -> None:
    """Hand on what is held, and each record as it comes from now on."""
    global batch_size
    batch_size = 1
    hand_on()
