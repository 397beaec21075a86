"""fastpost_event_loop_lag_seconds: each worker checks how late its event loop runs a due
timer (fastpost.observability.loop_lag). A request that blocks the loop shows in it; an idle
loop keeps it small; several workers report one series each."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from fastpost.app import create_app
from fastpost.observability import loop_lag
from fastpost.settings import ObservabilitySettings
from tests.conftest import make_settings
from tests.helpers import scrape
from tests.observability.served import scrape_until, serve, worker_pids

GAUGE = "fastpost_event_loop_lag_seconds"
HISTOGRAM = "fastpost_event_loop_lag_distribution_seconds"
# Checks this often in these tests (0.25 s by default), so that they wait little.
INTERVAL = 0.05
BLOCK = 0.3


def lag_gauge() -> float | None:
    return REGISTRY.get_sample_value(GAUGE, {"pid": str(os.getpid())})


def checks(*, over: float | None = None) -> float:
    """Checks counted by the histogram so far (those later than `over` seconds, if given)."""
    total = REGISTRY.get_sample_value(f"{HISTOGRAM}_count") or 0.0
    if over is None:
        return total
    return total - (REGISTRY.get_sample_value(f"{HISTOGRAM}_bucket", {"le": str(over)}) or 0.0)


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        database_url,
        data_dir=tmp_path / "data",
        observability=ObservabilitySettings(loop_lag_interval_seconds=INTERVAL),
    )
    application = create_app(settings)

    async def block_the_loop() -> dict[str, bool]:
        time.sleep(BLOCK)  # noqa: ASYNC251 - the anti-pattern, on purpose
        return {"blocked": True}

    application.add_api_route("/block", block_the_loop)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_route_that_blocks_the_loop_shows_as_lag(client: httpx.AsyncClient) -> None:
    await asyncio.sleep(INTERVAL * 3)  # the watch is running
    late_before = checks(over=0.1)

    assert (await client.get("/block")).status_code == 200
    # The first check after the stall is due at once; one loop step at a time, so that the
    # gauge is read before the next check replaces it.
    async with asyncio.timeout(5):
        while checks(over=0.1) == late_before:  # noqa: ASYNC110 - one loop step each
            await asyncio.sleep(0)
    lag = lag_gauge()

    assert lag is not None
    # The check was due at most INTERVAL after the stall began, and ran when it ended.
    assert lag >= 0.2


async def test_an_idle_loop_shows_little_lag(app: FastAPI) -> None:
    before = checks()
    await asyncio.sleep(INTERVAL * 10)

    lag = lag_gauge()
    assert lag is not None
    assert lag < 0.1
    assert checks() > before


async def test_the_lag_reaches_metrics_and_the_watch_ends_with_the_app(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        data_dir=tmp_path / "data",
        observability=ObservabilitySettings(loop_lag_interval_seconds=INTERVAL),
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await asyncio.sleep(INTERVAL * 3)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            text = (await client.get("/metrics")).text
        assert f'{GAUGE}{{pid="{os.getpid()}"}}' in text
        assert f'{HISTOGRAM}_bucket{{le="0.1"}}' in text
        assert any(t.get_name() == loop_lag.TASK_NAME for t in asyncio.all_tasks())

    assert not any(t.get_name() == loop_lag.TASK_NAME for t in asyncio.all_tasks())


def test_each_worker_reports_its_own_lag_and_all_share_the_histogram(tmp_path: Path) -> None:
    with serve(
        tmp_path, workers=2, extra_env={"FASTPOST_OBSERVABILITY__LOOP_LAG_INTERVAL_SECONDS": "0.05"}
    ) as server:
        samples = scrape_until(
            server.base,
            lambda samples: len(worker_pids(samples)) == 2 and len(_lag_by_pid(samples)) == 2,
        )
        assert set(_lag_by_pid(samples)) == worker_pids(samples)
        # One histogram for the instance: every worker's checks, summed.
        histogram = [
            dict(labels) for name, labels in scrape(server.base) if name.startswith(HISTOGRAM)
        ]
        assert histogram
        assert not any("pid" in labels for labels in histogram)


def _lag_by_pid(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[int, float]:
    return {int(dict(labels)["pid"]): v for (name, labels), v in samples.items() if name == GAUGE}
