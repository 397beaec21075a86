"""The live performance page (fastpost.observability.perf_page): its data per worker and in
total, who may see it, and the page itself in a headless browser under load."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastpost.app import create_app
from fastpost.observability import perf_page
from fastpost.observability.perf_page import PAGE_HTML
from fastpost.settings import SecuritySettings, Settings
from tests.helpers import environment, headless_chromium, migrate_and_seed, serve_fastpost
from tests.observability.served import serve

OUTSIDER = ("203.0.113.9", 40000)
METRICS_TOKEN = "scrape-token-0123456789abcdef0123456789"
PERF_PATHS = ("/_perf", "/_perf/app.js", "/_perf/data")
FIGURES = {"routes", "db_seconds", "cache", "pools", "event_loop_lag", "cpu_seconds"}
# Where the README's screenshot is refreshed from: FASTPOST_SCREENSHOT_DIR=docs/img.
SCREENSHOT_DIR = os.environ.get("FASTPOST_SCREENSHOT_DIR")


def _requests(figures: dict[str, Any], route: str) -> float:
    entry = figures["routes"].get(route)
    return float(entry["requests"]) if entry else 0.0


async def test_perf_data_has_cumulative_figures_per_route_and_for_this_process(
    client: httpx.AsyncClient,
) -> None:
    before = (await client.get("/_perf/data")).json()
    for _ in range(3):
        assert (await client.get("/health")).status_code == 200
    assert (await client.get("/no/such/path")).status_code == 404
    data = (await client.get("/_perf/data")).json()

    assert set(data) >= {"time", "answered_by", "multiprocess", "total", "workers", "exited"}
    assert data["time"] > before["time"]
    # Outside `fastpost serve --workers`, one process: itself, under its pid.
    assert data["multiprocess"] is False
    assert list(data["workers"]) == [str(os.getpid())] == [str(data["answered_by"])]
    assert data["workers"][str(os.getpid())] == data["total"]
    total = data["total"]
    assert set(total) >= FIGURES
    # The counters are cumulative: the browser takes the differences.
    assert _requests(total, "GET /health") - _requests(before["total"], "GET /health") == 3
    assert _requests(total, "GET unmatched") >= 1
    health = total["routes"]["GET /health"]
    # Cumulative latency buckets, +Inf last (as null), ending at the request count.
    bounds = [bound for bound, _ in health["buckets"]]
    assert bounds[-1] is None
    assert bounds[:-1] == sorted(bounds[:-1])
    counts = [count for _, count in health["buckets"]]
    assert counts == sorted(counts)
    assert counts[-1] == health["requests"]
    assert set(total["pools"]["write"]) == {"checked_out", "size", "overflow"}


def test_with_two_workers_the_total_is_the_sum_of_the_workers(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as server:
        sent = 0
        deadline = time.monotonic() + 30
        # A new connection per request, so that the kernel spreads them over the workers.
        while True:
            for _ in range(20):
                response = httpx.get(f"{server.base}/health", headers={"Connection": "close"})
                assert response.status_code == 200
                sent += 1
            data = httpx.get(f"{server.base}/_perf/data").json()
            workers = data["workers"]
            by_worker = [_requests(figures, "GET /health") for figures in workers.values()]
            served_by_both = len(by_worker) == 2 and all(by_worker)
            if served_by_both and _requests(data["total"], "GET /health") == sent:
                break
            assert time.monotonic() < deadline, (sent, data["total"]["routes"], by_worker)
            time.sleep(0.3)  # the other worker flushes its tallies every 0.2 s here

    assert data["multiprocess"] is True
    assert str(data["answered_by"]) in workers
    assert sum(by_worker) == sent
    total_health = data["total"]["routes"]["GET /health"]
    worker_health = [figures["routes"]["GET /health"] for figures in workers.values()]
    assert total_health["seconds"] == pytest.approx(sum(w["seconds"] for w in worker_health))
    for index, (bound, count) in enumerate(total_health["buckets"]):
        assert count == sum(w["buckets"][index][1] for w in worker_health), bound
    # Each worker's own process figures, from the files that carry its pid.
    for figures in workers.values():
        assert figures["cpu_seconds"] > 0
        assert figures["memory_bytes"] > 0


async def _statuses(settings: Settings, headers: dict[str, str] | None = None) -> list[int]:
    """The statuses of the page, its script and its data, asked from outside."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=OUTSIDER)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get(path, headers=headers)).status_code for path in PERF_PATHS]


def test_without_the_event_loop_lag_metric_its_figure_is_absent() -> None:
    samples = perf_page.figures([])
    assert samples["event_loop_lag"] is None  # the page shows "n/a"
    assert samples["routes"] == {}


async def test_the_page_answers_anyone_outside_production(settings: Settings) -> None:
    assert await _statuses(settings) == [200, 200, 200]


async def test_in_production_the_page_answers_whoever_may_read_metrics_only(
    settings: Settings,
) -> None:
    security = SecuritySettings(metrics_allow=["10.0.0.0/8"], metrics_token=METRICS_TOKEN)
    production = settings.model_copy(update={"env": "production", "security": security})
    # The guard of /metrics (fastpost.observability.metrics_access): to others, a path that
    # does not exist.
    assert await _statuses(production) == [404, 404, 404]
    wrong = {"Authorization": "Bearer not-the-token"}
    assert await _statuses(production, wrong) == [404, 404, 404]
    right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert await _statuses(production, right) == [200, 200, 200]


async def test_the_page_runs_only_its_own_script_and_stays_out_of_the_schema(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/_perf")
    assert page.headers["content-type"].startswith("text/html")
    policy = dict(
        directive.strip().partition(" ")[::2]
        for directive in page.headers["content-security-policy"].split(";")
    )
    # No inline script to allow: the script is a file of fastpost's own, and it reads the
    # figures from the same origin.
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert re.findall(rb"<script>", PAGE_HTML) == []
    script = await client.get("/_perf/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert re.findall(rb'<script src="([^"]+)"', PAGE_HTML) == [b"_perf/app.js"]
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/_perf")]


# --- the page in a browser, under load ----------------------------------------------------


def _playwright_missing() -> str | None:
    if headless_chromium() is None:
        return "no headless Chromium (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev extra)"
    return None


@contextmanager
def _light_load(base: str, post_ids: list[int], clients: int = 4) -> Iterator[list[int]]:
    """`clients` concurrent clients reading GET /posts/ and GET /posts/{id} in a thread of
    their own until the block ends; yields the list of statuses they got, as it grows."""
    statuses: list[int] = []
    stop = threading.Event()

    async def reader(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            i = n
            while not stop.is_set():
                path = "/posts/" if i % 4 == 0 else f"/posts/{post_ids[i % len(post_ids)]}"
                statuses.append((await client.get(path)).status_code)
                i += 1
                await asyncio.sleep(0.01)  # light: the machine is shared

    async def run() -> None:
        await asyncio.gather(*(reader(n) for n in range(clients)))

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.mark.skipif(_playwright_missing() is not None, reason=str(_playwright_missing()))
def test_the_page_shows_figures_that_move_under_load_in_a_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    env = {**environment(tmp_path), "FASTPOST_OBSERVABILITY__METRICS_FLUSH_SECONDS": "0.2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    migrate_and_seed(env, tmp_path, "--users", "20", "--posts", "200", "--follows", "50",
                     "--likes", "200")  # fmt: skip
    route = "GET /posts/{post_id}"
    rate_cell = f'tr[data-route="{route}"] td.rps'
    with serve_fastpost("--workers", "2", env=env, cwd=tmp_path) as server:
        post_ids = [post["id"] for post in httpx.get(f"{server.base}/posts/").json()["items"]]
        assert post_ids
        with _light_load(server.base, post_ids) as statuses, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=headless_chromium(), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            # A script or fetch the page's CSP blocked is reported as a console error.
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            page.goto(f"{server.base}/_perf")
            page.wait_for_function(
                f"() => parseFloat(document.querySelector('{rate_cell}')?.textContent) > 0",
                timeout=30_000,
            )
            rates = []
            for _ in range(5):  # one poll a second: the figure follows the load
                rates.append(page.inner_text(rate_cell))
                page.wait_for_timeout(1_000)
            workers = page.locator("#workers tbody tr").all_inner_texts()
            # One worker's figures alone: its routes, from the files that carry its pid. The
            # kernel may hand every connection of the load to one worker, so each is tried:
            # the one that served it shows its routes.
            per_worker = []
            for index in (1, 2):
                page.select_option("#view", index=index)
                page.wait_for_timeout(1_500)
                per_worker.append(page.locator("#routes tbody tr").all_inner_texts())
            one_worker = max(per_worker, key=len)
            lag = page.inner_text("#lag")
            if SCREENSHOT_DIR:  # for the README: charts with some history
                page.wait_for_timeout(40_000)
            screenshot = page.screenshot(path=tmp_path / "perf_page.png", full_page=True)
            browser.close()
        assert statuses
        assert set(statuses) == {200}, set(statuses)

    assert problems == []
    assert all(float(rate) > 0 for rate in rates), rates
    assert len(set(rates)) > 1, rates
    # Both workers and the total, each a row.
    assert len(workers) == 3, workers
    assert one_worker, one_worker
    assert workers[-1].startswith("all"), workers
    # fastpost_event_loop_lag_seconds, each worker's last check (the page says n/a without).
    assert re.match(r"[\d.]+ m?s\b", lag), lag
    assert screenshot.startswith(b"\x89PNG")
    if SCREENSHOT_DIR:
        shutil.copy(tmp_path / "perf_page.png", Path(SCREENSHOT_DIR) / "perf_page.png")
