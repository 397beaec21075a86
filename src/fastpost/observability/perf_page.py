"""The live performance page: GET /_perf, its script /_perf/app.js, and /_perf/data, the
figures it polls every second.

/_perf/data reads the samples /metrics serves (fastpost.observability.metrics.scrape_registry: every
worker's, when several share the multiprocess folder) and each worker's own, from the files
that carry its pid in their names, and answers cumulative figures: request counts, latency
histograms, seconds in the database, cache hits and misses; and the current pool use and
event-loop lag. The browser turns the differences between two polls into rates and
percentiles, so the server keeps nothing between requests and any worker may answer.

Who may see it is who may read /metrics (fastpost.observability.metrics_access.MetricsAccess):
anyone outside production; in production, the allowed addresses or the metrics token.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.metrics_core import Metric

from fastpost.observability import metrics
from fastpost.observability.metrics_access import MetricsAccess
from fastpost.security_headers import SecurityHeaders
from fastpost.settings import Settings

PAGE_PATH = "/_perf"
_HERE = files(__package__)
PAGE_HTML = (_HERE / "perf_page.html").read_bytes()
PAGE_SCRIPT = (_HERE / "perf_page.js").read_bytes()
# Read by name (fastpost.observability.loop_lag): when absent, the page says "n/a". The
# gauge is each worker's last check; the histogram counts every check.
EVENT_LOOP_LAG = "fastpost_event_loop_lag_seconds"
EVENT_LOOP_LAG_CHECKS = "fastpost_event_loop_lag_distribution_seconds"

Figures = dict[str, Any]


def figures(families: Iterable[Metric]) -> Figures:
    """The cumulative figures the page needs, from one worker's samples or from all."""
    routes: dict[str, dict[str, Any]] = {}
    cache: dict[str, dict[str, float]] = {}
    pools: dict[str, dict[str, float]] = {}
    lag_buckets: dict[float, float] = {}
    lag: Figures = {}
    result: Figures = {
        "routes": routes,
        "db_seconds": 0.0,
        "cache": cache,
        "pools": pools,
        "event_loop_lag": None,
        "cpu_seconds": None,
        "memory_bytes": None,
    }

    def route(labels: dict[str, str]) -> dict[str, Any]:
        key = f"{labels['method']} {labels['route']}"
        entry = routes.get(key)
        if entry is None:
            entry = routes[key] = {"requests": 0.0, "errors": 0.0, "seconds": 0.0, "le": {}}
        return entry

    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "http_requests_total":
                entry = route(labels)
                entry["requests"] += value
                if labels["status"].startswith("5"):
                    entry["errors"] += value
            elif name == "http_request_duration_seconds_bucket":
                le = route(labels)["le"]
                bound = float(labels["le"])
                le[bound] = le.get(bound, 0.0) + value
            elif name == "http_request_duration_seconds_sum":
                route(labels)["seconds"] += value
            elif name == "db_query_duration_seconds_sum":
                result["db_seconds"] += value
            elif name in ("cache_hits_total", "cache_misses_total"):
                tier = cache.setdefault(labels["tier"], {"hits": 0.0, "misses": 0.0})
                tier["hits" if name == "cache_hits_total" else "misses"] += value
            elif name == "db_pool_connections":
                pool = pools.setdefault(labels["pool"], {})
                pool[labels["state"]] = pool.get(labels["state"], 0.0) + value
            elif name == "fastpost_worker_cpu_seconds_total":
                result["cpu_seconds"] = (result["cpu_seconds"] or 0.0) + value
            elif name == "fastpost_worker_resident_memory_bytes":
                result["memory_bytes"] = (result["memory_bytes"] or 0.0) + value
            elif name == EVENT_LOOP_LAG:  # a gauge: the worst worker's
                lag["seconds"] = max(lag.get("seconds", 0.0), value)
            elif name == EVENT_LOOP_LAG_CHECKS + "_bucket":
                bound = float(labels["le"])
                lag_buckets[bound] = lag_buckets.get(bound, 0.0) + value
    for entry in routes.values():
        entry["buckets"] = _cumulative(entry.pop("le"))
    if lag_buckets:
        lag["buckets"] = _cumulative(lag_buckets)
    if lag:
        result["event_loop_lag"] = lag
    return result


def _cumulative(counts: dict[float, float]) -> list[list[float | None]]:
    """[[upper bound, observations at or below it], ...] by bound; +Inf as null (JSON)."""
    return [[b if b != float("inf") else None, counts[b]] for b in sorted(counts)]


def perf_data() -> Figures:
    """The body of /_perf/data (see the module's docstring)."""
    # The total first: reading it reaps exited workers' files, which then count as exited.
    total = figures(metrics.scrape_registry().collect())
    workers = metrics.samples_by_worker()
    exited = workers.pop("exited", None)
    return {
        "time": time.time(),
        "answered_by": os.getpid(),
        "multiprocess": metrics.multiprocess_dir() is not None,
        "total": total,
        "workers": {pid: figures(samples) for pid, samples in workers.items()},
        "exited": figures(exited) if exited is not None else None,
    }


async def page(request: Request) -> Response:
    """GET /_perf: the page."""
    return Response(PAGE_HTML, media_type="text/html; charset=utf-8")


async def script(request: Request) -> Response:
    """GET /_perf/app.js: the page's script, a file rather than inline (see install_perf_page)."""
    return Response(PAGE_SCRIPT, media_type="text/javascript; charset=utf-8")


async def data(request: Request) -> Response:
    """GET /_perf/data: the cumulative figures, per worker and in total (perf_data)."""
    # This worker's last tallies and pools, as /metrics does: other workers' come with
    # their next flush (metrics_flush_seconds) and sample (sample_interval_seconds).
    metrics.flush()
    metrics.sample_process(request.app.state.db.pool_usage())
    return JSONResponse(perf_data(), headers={"Cache-Control": "no-store"})


def install_perf_page(app: FastAPI, settings: Settings, security_headers: SecurityHeaders) -> None:
    """Serve the page, its script and its data to whoever may read /metrics."""
    guard = [Depends(MetricsAccess(settings))]
    for path, endpoint in (
        (PAGE_PATH, page),
        (f"{PAGE_PATH}/app.js", script),
        (f"{PAGE_PATH}/data", data),
    ):
        app.add_api_route(path, endpoint, include_in_schema=False, dependencies=guard)
    # Its script is a file of fastpost's own (script-src 'self'), and it fetches /_perf/data
    # from the same origin (connect-src 'self'): nothing inline to hash.
    security_headers.allow_page(PAGE_PATH, PAGE_HTML)
