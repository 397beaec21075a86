"""/metrics is correct with several worker processes: every request counted once, whichever
worker answers the scrape, and nothing lost or left behind when a worker dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.helpers import scrape
from tests.observability.served import scrape_until, serve, value, worker_pids


def _get_many(base: str, path: str, count: int) -> None:
    # A new connection per request, so that the kernel spreads them over the workers.
    for _ in range(count):
        response = httpx.get(f"{base}{path}", headers={"Connection": "close"})
        assert response.status_code in (200, 404)


def test_every_scrape_counts_every_request_whichever_worker_served_it(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as server:
        _get_many(server.base, "/health", 120)
        _get_many(server.base, "/posts/123456", 7)
        # Each worker folds its tallies into the shared files on its own clock: wait until
        # both routes' last flushes have landed, then every scrape must agree.
        scrape_until(
            server.base,
            lambda samples: (
                value(samples, "http_requests_total", route="/health") == 120
                and value(samples, "http_requests_total", route="/posts/{post_id}") == 7
            ),
        )
        for _ in range(10):
            samples = scrape(server.base)
            assert len(worker_pids(samples)) == 2
            assert value(samples, "http_requests_total", route="/health", status="200") == 120
            assert value(samples, "http_requests_total", route="/posts/{post_id}") == 7
            assert (
                value(samples, "http_request_duration_seconds_count", method="GET", route="/health")
                == 120
            )


def test_unmatched_paths_share_one_route_label(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as server:
        for path in ("/wp-login.php", "/.env", "/admin/123", "/x/y/z"):
            assert httpx.get(f"{server.base}{path}").status_code == 404
        samples = scrape_until(
            server.base,
            lambda samples: value(samples, "http_requests_total", route="unmatched") >= 4,
        )
        routes = {
            dict(labels)["route"] for name, labels in samples if name == "http_requests_total"
        }
        assert "unmatched" in routes
        assert not routes & {"/wp-login.php", "/.env", "/admin/123", "/x/y/z"}
        assert value(samples, "http_requests_total", route="unmatched", status="404") == 4


def test_a_dead_workers_counts_survive_and_its_files_are_reaped(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as server:
        _get_many(server.base, "/health", 60)
        # Every worker has flushed: a killed worker loses only what it has not yet flushed.
        before = scrape_until(
            server.base,
            lambda samples: value(samples, "http_requests_total", route="/health") == 60,
        )
        victim = min(worker_pids(before))
        os.kill(victim, signal.SIGKILL)
        # uvicorn's supervisor starts a replacement; wait until it serves and has sampled.
        deadline = time.monotonic() + 20
        while True:
            samples = scrape(server.base)
            pids = worker_pids(samples)
            if len(pids) == 2 and victim not in pids:
                break
            assert time.monotonic() < deadline, f"no replacement worker: {pids}"
            time.sleep(0.3)
        _get_many(server.base, "/health", 10)
        samples = scrape_until(
            server.base,
            lambda samples: value(samples, "http_requests_total", route="/health") >= 70,
        )
        assert value(samples, "http_requests_total", route="/health") == 70
        assert not [p for p in os.listdir(server.metrics_dir) if p.endswith(f"_{victim}.db")]
        assert (server.metrics_dir / "counter_archive.db").exists()
