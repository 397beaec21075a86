"""fastpost's /metrics before and after a run: queries, query time, cache hits and misses."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

# Sample name -> the figure it adds to (summed over every label set and worker).
FIGURES = {
    "db_queries_total": "queries",
    "db_query_duration_seconds_sum": "query_seconds",
    "cache_hits_total": "cache_hits",
    "cache_misses_total": "cache_misses",
    "http_requests_total": "http_requests",
}


def scrape(base_url: str) -> dict[str, float] | None:
    """Return fastpost's totals from /metrics, or None when the server has no /metrics."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            figure = FIGURES.get(sample.name)
            if figure:
                totals[figure] += sample.value
    for figure in FIGURES.values():
        totals.setdefault(figure, 0.0)
    return dict(totals)


def delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    """Return what the run added to each figure, with per-request and hit-rate figures."""
    if before is None or after is None:
        return {}
    change = {name: after[name] - before.get(name, 0.0) for name in after}
    # The scrapes themselves are requests too; what the run sent is the rest.
    requests = max(change["http_requests"], 1.0)
    lookups = change["cache_hits"] + change["cache_misses"]
    change["queries_per_request"] = change["queries"] / requests
    change["query_ms_per_request"] = change["query_seconds"] * 1000 / requests
    change["cache_hit_rate"] = change["cache_hits"] / lookups if lookups else 0.0
    return change
