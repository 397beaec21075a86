"""The course's example code has defects that bite in production. Each test shows the
defect on a few lines that carry the snippet's idea (written here, not copied), then the
same behaviour in fastpost. docs/guide/ and docs/guia/ link here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tests.conftest import Factory


def _in_a_fresh_python(code: str, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_cache_key_built_with_hash_differs_between_processes() -> None:
    # The idea: key = f"{function name}:{hash((args, kwargs))}", shared through Redis.
    # hash() of a str is salted per process (PYTHONHASHSEED), so each worker computes its
    # own key for the same call and never finds what another stored. (Integers hash to
    # themselves, which hides the defect in a demo with numeric arguments.)
    idea = "print('popular_posts:' + str(hash((('python',), (('limit', 10),)))))"
    keys = {_in_a_fresh_python(idea, seed) for seed in ("1", "2", "3")}
    assert len(keys) == 3

    # fastpost.cache.cache_key joins the parts as text: every process agrees.
    ours = "from fastpost.cache import cache_key; print(cache_key('posts', 'python', 10))"
    assert len({_in_a_fresh_python(ours, seed) for seed in ("1", "2", "3")}) == 1


async def _call(app: Any, path: str) -> int:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return (await client.get(path)).status_code


async def test_metric_labels_from_raw_paths_make_a_series_per_id() -> None:
    # The idea: a counter labelled with request.url.path.
    registry = CollectorRegistry()
    count = Counter("requests", "", ["endpoint"], registry=registry)

    async def by_raw_path(request: Request, call_next: Callable[..., Awaitable[Response]]) -> Any:
        count.labels(endpoint=request.url.path).inc()
        return await call_next(request)

    async def post(request: Request) -> Response:
        return PlainTextResponse("post")

    app = FastAPI()
    app.add_route("/posts/{post_id}", post)
    app.middleware("http")(by_raw_path)
    for post_id in range(1, 21):
        await _call(app, f"/posts/{post_id}")
    series = {s.labels["endpoint"] for m in registry.collect() for s in m.samples}
    # One series per post ever read: scanners and crawlers grow Prometheus without bound.
    assert len(series) == 20


async def test_fastpost_labels_requests_by_route_template(app: FastAPI, factory: Factory) -> None:
    author = await factory.user()
    post_ids = [await factory.post(author) for _ in range(5)]
    for post_id in [*post_ids, 10**9]:
        await _call(app, f"/posts/{post_id}")
    app.state.observability.flush_metrics()
    routes = {
        s.labels["route"]
        for m in REGISTRY.collect()
        for s in m.samples
        if s.name == "http_requests_total"
    }
    assert "/posts/{post_id}" in routes
    assert not [route for route in routes if any(str(i) in route for i in post_ids)]


async def test_a_timing_middleware_that_awaits_outside_try_measures_nothing_on_errors() -> None:
    # The idea: start = time.time(); response = await call_next(request); observe(elapsed).
    registry = CollectorRegistry()
    latency = Histogram("latency", "", registry=registry)

    async def timed(request: Request, call_next: Callable[..., Awaitable[Response]]) -> Any:
        start = time.time()
        response = await call_next(request)
        latency.observe(time.time() - start)
        return response

    async def boom(request: Request) -> Response:
        raise RuntimeError("the database went away")

    app = FastAPI()
    app.add_route("/boom", boom)
    app.middleware("http")(timed)
    assert await _call(app, "/boom") == 500
    # The failed request, often the slow one, is in no histogram.
    assert registry.get_sample_value("latency_count") == 0


async def test_fastpost_counts_and_times_a_request_that_raised(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("the database went away")

    app.add_api_route("/course-boom", boom)
    counted = {"method": "GET", "route": "/course-boom", "status": "500"}
    timed = {"method": "GET", "route": "/course-boom"}

    def samples() -> tuple[float, float]:
        app.state.observability.flush_metrics()
        return (
            REGISTRY.get_sample_value("http_requests_total", counted) or 0.0,
            REGISTRY.get_sample_value("http_request_duration_seconds_count", timed) or 0.0,
        )

    before = samples()
    assert await _call(app, "/course-boom") == 500
    after = samples()
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1


async def test_an_in_process_cache_without_invalidation_serves_the_old_value() -> None:
    # The idea: a module-level dict in front of the loader, filled on a miss, never cleared
    # (its TTL went to Redis only).
    titles = {1: "first title"}
    cache: dict[str, str] = {}

    async def get_title(post_id: int) -> str:
        key = f"get_title:{post_id}"
        if key not in cache:
            cache[key] = titles[post_id]
        return cache[key]

    assert await get_title(1) == "first title"
    titles[1] = "edited title"
    assert await get_title(1) == "first title"  # for as long as the process lives


async def test_fastpost_drops_a_cached_post_when_it_changes(app: FastAPI, factory: Factory) -> None:
    author = await factory.user()
    post_id = await factory.post(author, title="first title")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get(f"/posts/{post_id}")).json()["title"] == "first title"
        assert (await client.get(f"/posts/{post_id}")).json()["title"] == "first title"
        edited = await client.patch(
            f"/posts/{post_id}", json={"title": "edited title"}, headers=author.headers
        )
        assert edited.status_code == 200
        assert (await client.get(f"/posts/{post_id}")).json()["title"] == "edited title"
