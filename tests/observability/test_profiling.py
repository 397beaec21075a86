"""Profiling: `?profile=1` with FASTPOST_PROFILING=1, and `fastpost profile METHOD PATH`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.settings import Settings
from tests.conftest import make_settings
from tests.test_cli import environment, fastpost


@pytest.fixture
async def profiling_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(settings.db.url, profiling=True))
    async with application.router.lifespan_context(application):
        yield application


def _client(app: FastAPI, client_host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_profile_1_from_loopback_returns_an_html_profile_of_the_request(
    profiling_app: FastAPI,
) -> None:
    async with _client(profiling_app, "127.0.0.1") as client:
        response = await client.get("/posts/?limit=5&profile=1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "pyinstrument" in response.text


async def test_profile_1_from_elsewhere_gets_the_normal_answer(profiling_app: FastAPI) -> None:
    async with _client(profiling_app, "203.0.113.9") as client:
        response = await client.get("/posts/?limit=5&profile=1")
    assert response.headers["content-type"] == "application/json"


async def test_without_profiling_enabled_profile_1_is_ignored(app: FastAPI) -> None:
    async with _client(app, "127.0.0.1") as client:
        response = await client.get("/health?profile=1")
    assert response.json() == {"status": "ok"}


def test_fastpost_profile_prints_the_top_functions_of_one_request(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    result = fastpost("profile", "GET", "/posts/?limit=5", "--top", "10", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "GET /posts/?limit=5 -> 200" in result.stdout
    assert "cumulative" in result.stdout
    assert "function calls" in result.stdout


def test_fastpost_profile_writes_a_speedscope_file(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    out = tmp_path / "profile.speedscope.json"
    result = fastpost(
        "profile", "GET", "/users/1", "--as-user", "1", "--speedscope", str(out),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "speedscope" in json.loads(out.read_text())["$schema"]
