"""Memory: `fastpost profile --memory` (one request's allocations) and the memory-growth
check (`fastpost profile --growth N`), which fails on a leak and passes on a real route."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from fastpost.app import create_app
from fastpost.observability.memory import measure_growth, memory_command, trace_request
from fastpost.settings import ObservabilitySettings, Settings
from tests.conftest import Factory
from tests.helpers import environment, fastpost, migrate_and_seed

# What the planted leak keeps: one entry per request, for ever.
_kept: list[dict[str, object]] = []
# A row of an allocation table: file:line, bytes, blocks.
ALLOCATION_ROW = re.compile(r"^  \S+\.py:\d+ +\+?[\d,]+ +\+?[\d,]+$", re.MULTILINE)


async def _leaky(request: Request) -> dict[str, str]:
    _kept.append({"path": request.url.path, "query": dict(request.query_params)})
    return {"status": "ok"}


@pytest.fixture
def planted_leak() -> Iterator[list[dict[str, object]]]:
    yield _kept
    _kept.clear()


def _uncached(settings: Settings) -> Settings:
    # As `fastpost profile` runs it: the cache off, so that each request does the work. The
    # periodic flushes often, so that the check waits little for them before measuring.
    return settings.model_copy(
        update={
            "cache": settings.cache.model_copy(update={"enabled": False}),
            "observability": ObservabilitySettings(metrics_flush_seconds=0.05),
        }
    )


def _app_with_a_leak(settings: Settings) -> FastAPI:
    app = create_app(_uncached(settings))
    app.add_api_route("/leaky", _leaky)
    return app


async def _a_post(app: FastAPI) -> int:
    async with app.router.lifespan_context(app):
        factory = Factory(app)
        user = await factory.user()
        return await factory.post(user)


async def test_the_growth_check_passes_on_a_post_read(settings: Settings) -> None:
    app = create_app(_uncached(settings))
    post_id = await _a_post(app)

    growth = await measure_growth(app, "GET", f"/posts/{post_id}", requests=1000, warmup=100)

    assert growth.statuses == {200: 1000}
    assert not growth.leaks(), growth
    assert growth.rss_before is not None
    assert growth.rss_after is not None


def test_the_growth_check_exits_1_on_a_leak_planted_in_a_route_and_names_its_line(
    settings: Settings, planted_leak: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    app = _app_with_a_leak(settings)

    status = memory_command(
        app, "GET", "/leaky", headers={}, json_body=None, memray_out=None,
        growth_thousands=1, max_bytes_per_request=None, top=5,
    )  # fmt: skip

    out = capsys.readouterr().out
    assert status == 1
    assert len(planted_leak) == 1000 + 500  # the measured requests and the warm-up
    assert "1,000 requests after the warm-up (1,000 x 200)" in out
    assert "(threshold 64): LEAKS" in out
    # The line that leaks leads the lines that grew.
    grew = out.split("grew over the last third, by line:\n", 1)[1].splitlines()
    leaking_line = f"test_memory.py:{_leaky.__code__.co_firstlineno + 1}"
    assert grew[1].split()[0].endswith(leaking_line), out


async def test_one_request_s_allocations_are_listed_by_line(settings: Settings) -> None:
    app = create_app(_uncached(settings))
    post_id = await _a_post(app)

    report = await trace_request(app, "GET", f"/posts/{post_id}", top=50)

    assert report.status == 200
    assert report.held_bytes > 0
    assert report.peak_bytes >= report.held_bytes
    # The response body the route built is among what the request held as it answered.
    assert any(a.where.startswith("fastpost/") for a in report.held)
    assert all(re.fullmatch(r".+:\d+", a.where) for a in report.held)
    # The measuring's own frames are left out.
    assert not any("tracemalloc" in a.where or "memory.py" in a.where for a in report.held)


def test_fastpost_profile_memory_and_growth_on_a_real_route(tmp_path: Path) -> None:
    env = environment(tmp_path)
    migrate_and_seed(env, tmp_path, "--users", "3", "--posts", "5", "--likes", "0")

    memory = fastpost("profile", "--memory", "GET", "/posts/1", env=env, cwd=tmp_path)
    growth = fastpost("profile", "--growth", "1", "GET", "/posts/1", env=env, cwd=tmp_path)

    assert memory.returncode == 0, memory.stderr
    assert "GET /posts/1 -> 200" in memory.stdout
    assert "held as it answered, by line:" in memory.stdout
    assert ALLOCATION_ROW.search(memory.stdout)
    assert growth.returncode == 0, growth.stdout + growth.stderr
    assert "1,000 requests after the warm-up (1,000 x 200)" in growth.stdout
    assert "threshold 64): ok" in growth.stdout
    assert "RSS: " in growth.stdout


@pytest.mark.skipif(importlib.util.find_spec("memray") is not None, reason="memray installed")
def test_fastpost_profile_memray_without_memray_says_how_to_get_it(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0

    result = fastpost(
        "profile", "--memray", str(tmp_path / "capture.bin"), "GET", "/health",
        env=env, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 2
    assert "memray is not installed: pip install memray" in result.stdout
