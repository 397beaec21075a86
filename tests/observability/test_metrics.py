"""Metrics labels, Server-Timing and the request id, in-process."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from fastpost.observability import metrics
from fastpost.observability.edge import Edge
from fastpost.observability.metrics import LATENCY_BUCKETS
from fastpost.observability.request_stats import RequestStats, current_request
from fastpost.observability.served import ServedRequests
from tests.conftest import Factory


def requests_total(app: FastAPI, **labels: str) -> float:
    app.state.observability.flush_metrics()
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_method_and_status(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    labels = {"method": "GET", "route": "/users/{user_id}", "status": "200"}
    missing = {"method": "GET", "route": "/users/{user_id}", "status": "404"}
    before, before_missing = requests_total(app, **labels), requests_total(app, **missing)
    await client.get(f"/users/{author.id}")
    await client.get(f"/users/{author.id}")
    await client.get("/users/999999999")
    assert requests_total(app, **labels) == before + 2
    assert requests_total(app, **missing) == before_missing + 1


async def test_unknown_paths_and_methods_do_not_make_new_series(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    before = requests_total(app, method="other", route="unmatched", status="404")
    await client.request("PROPFIND", "/no/such/path/12345")
    assert requests_total(app, method="other", route="unmatched", status="404") == before + 1


async def test_server_timing_splits_database_and_application_time(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/posts/")
    timing = dict(
        re.fullmatch(r"\s*(\w+);dur=([\d.-]+)\s*", part).groups()  # type: ignore[union-attr]
        for part in response.headers["server-timing"].split(",")
    )
    assert set(timing) == {"db", "cache", "app", "total"}
    assert float(timing["db"]) > 0
    assert float(timing["total"]) >= float(timing["db"])


async def test_metrics_endpoint_exposes_the_fixed_metric_names(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/health")
    text = (await client.get("/metrics")).text
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "db_queries_total",
        "fastpost_worker_cpu_seconds_total",
        "fastpost_worker_resident_memory_bytes",
        "db_pool_connections",
    ):
        assert name in text
    assert 'le="0.001"' in text
    assert 'le="10.0"' in text


async def test_a_scrape_is_counted_under_its_own_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    before = requests_total(app, method="GET", route="/metrics", status="200")
    unmatched = requests_total(app, method="GET", route="unmatched", status="200")
    assert (await client.get("/metrics")).status_code == 200
    assert requests_total(app, method="GET", route="/metrics", status="200") == before + 1
    assert requests_total(app, method="GET", route="unmatched", status="200") == unmatched


async def test_cache_events_are_counted_and_reach_the_access_line(app: FastAPI) -> None:
    from fastpost.observability.metrics import cache_event

    stats = RequestStats()
    token = current_request.set(stats)
    try:
        metrics.flush()
        before = REGISTRY.get_sample_value("cache_hits_total", {"cache": "t", "tier": "local"})
        cache_event("t", "local", "hit")
        cache_event("t", "redis", "miss")
        cache_event("t", "", "load")
        cache_event("t", "local", "invalidation")
    finally:
        current_request.reset(token)
    metrics.flush()
    assert (stats.cache_hits, stats.cache_misses) == (1, 1)
    after = REGISTRY.get_sample_value("cache_hits_total", {"cache": "t", "tier": "local"})
    assert after == (before or 0) + 1
    assert REGISTRY.get_sample_value("cache_loads_total", {"cache": "t"})
    assert REGISTRY.get_sample_value("cache_invalidations_total", {"cache": "t", "tier": "local"})


async def test_requests_in_progress_are_counted_by_route_while_they_run(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    import asyncio

    started, release = asyncio.Event(), asyncio.Event()

    async def slow(item_id: int) -> dict[str, int]:
        started.set()
        await release.wait()
        return {"item_id": item_id}

    app.add_api_route("/slow/{item_id}", slow)
    labels = {"method": "GET", "route": "/slow/{item_id}"}
    request = asyncio.create_task(client.get("/slow/1"))
    await started.wait()
    metrics.flush()
    assert REGISTRY.get_sample_value("http_requests_in_progress", labels) == 1
    release.set()
    await request
    metrics.flush()
    assert REGISTRY.get_sample_value("http_requests_in_progress", labels) == 0


def test_served_requests_are_counted_in_their_status_and_latency_bucket() -> None:
    route = "/test/tally"
    durations = {200: [0.0005, 0.001, 0.003, 0.003, 12.0], 503: [0.2]}
    batch = []
    for status, seconds in durations.items():
        for duration in seconds:
            stats = RequestStats()
            stats.method, stats.route, stats.status, stats.duration = "GET", route, status, duration
            batch.append(stats)
    metrics.count_served(batch)
    metrics.flush()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"method": "GET", "route": route, **labels})

    assert sample("http_requests_total", status="200") == 5
    assert sample("http_requests_total", status="503") == 1
    # Buckets are cumulative: le="0.001" holds 0.0005 and 0.001 (an upper bound is inclusive).
    expected = {0.001: 2, 0.0025: 2, 0.005: 4, 0.1: 4, 0.2: 5, 10.0: 5}
    for bound, count in expected.items():
        assert bound in LATENCY_BUCKETS
        assert sample("http_request_duration_seconds_bucket", le=str(bound)) == count
    assert sample("http_request_duration_seconds_bucket", le="+Inf") == 6
    assert sample("http_request_duration_seconds_count") == 6
    total = sum(durations[200] + durations[503])
    assert sample("http_request_duration_seconds_sum") == pytest.approx(total)


async def test_generated_request_ids_stay_distinct_after_the_first_batch_is_used_up() -> None:
    async def answer(scope: object, receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    edge = Edge(answer, max_body_bytes=1000)
    ids: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            ids.extend(value for name, value in message["headers"] if name == b"x-request-id")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": "/x", "headers": []}
    for _ in range(2500):  # ids are made 1,024 at a time
        await edge(dict(scope), receive, send)
    assert len(set(ids)) == len(ids) == 2500
    assert all(re.fullmatch(rb"[0-9a-f]{16}", request_id) for request_id in ids)


async def test_a_batch_handed_on_as_a_request_ends_is_not_done_in_its_name() -> None:
    async def answer(scope: object, receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    seen: list[tuple[int, RequestStats | None]] = []

    def sink(batch: list[RequestStats]) -> None:
        seen.append((len(batch), current_request.get()))

    served = ServedRequests()
    served.sinks.append(sink)
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": "/", "headers": []}
    await Edge(answer, max_body_bytes=1000, served=served)(scope, receive, send)
    assert seen == [(1, None)]  # outside a served app, each request is handed on as it ends


def test_a_batch_of_several_routes_counts_each_duration_in_its_own_series_and_bucket() -> None:
    # count_served sorts each series' durations and splits them at the buckets' bounds: the
    # order in which requests end, and the other routes of the batch, must not matter.
    served = [
        ("GET", "/test/split/a", 200, 0.3),
        ("POST", "/test/split/a", 201, 0.0001),
        ("GET", "/test/split/b", 200, 0.0025),
        ("GET", "/test/split/a", 200, 0.0001),
        ("GET", "/test/split/a", 200, 0.0025),
        ("GET", "/test/split/b", 200, 20.0),
    ]
    batch = []
    for method, route, status, duration in served:
        stats = RequestStats()
        stats.method, stats.route, stats.status, stats.duration = method, route, status, duration
        batch.append(stats)
    metrics.count_served(batch)
    metrics.flush()

    def buckets(method: str, route: str) -> dict[str, float | None]:
        labels = {"method": method, "route": route}
        return {
            le: REGISTRY.get_sample_value(
                "http_request_duration_seconds_bucket", {**labels, "le": le}
            )
            for le in ("0.001", "0.0025", "0.005", "0.2", "0.5", "10.0", "+Inf")
        }

    assert buckets("GET", "/test/split/a") == {
        "0.001": 1, "0.0025": 2, "0.005": 2, "0.2": 2, "0.5": 3, "10.0": 3, "+Inf": 3,
    }  # fmt: skip
    assert buckets("POST", "/test/split/a")["0.001"] == 1
    assert buckets("GET", "/test/split/b") == {
        "0.001": 0, "0.0025": 1, "0.005": 1, "0.2": 1, "0.5": 1, "10.0": 1, "+Inf": 2,
    }  # fmt: skip
    sums = {
        route: REGISTRY.get_sample_value(
            "http_request_duration_seconds_sum", {"method": "GET", "route": route}
        )
        for route in ("/test/split/a", "/test/split/b")
    }
    assert sums == {"/test/split/a": pytest.approx(0.3026), "/test/split/b": pytest.approx(20.0025)}
    assert (
        REGISTRY.get_sample_value(
            "http_requests_total", {"method": "POST", "route": "/test/split/a", "status": "201"}
        )
        == 1
    )
