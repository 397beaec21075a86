"""Profiling: `?profile=1` with FASTPOST_PROFILING=1, and `fastpost profile METHOD PATH`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from fastpost.app import create_app
from fastpost.settings import Settings
from fastpost.users.models import User
from tests.conftest import Factory, TestUser, make_settings
from tests.helpers import environment, fastpost, migrate_and_seed

ELSEWHERE = "203.0.113.9"


@pytest.fixture
async def profiling_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(settings.db.url, profiling=True))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def production_profiling_app(settings: Settings) -> AsyncIterator[FastAPI]:
    production = make_settings(settings.db.url, profiling=True).model_copy(
        update={"env": "production"}
    )
    application = create_app(production)
    async with application.router.lifespan_context(application):
        yield application


async def _admin(app: FastAPI, *, is_admin: bool = True) -> TestUser:
    factory = Factory(app)
    user = await factory.user()
    async with factory.db.transaction() as session:
        await session.execute(update(User).where(User.id == user.id).values(is_admin=is_admin))
    return user


def _is_profile(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html") and (
        "pyinstrument" in response.text
    )


def _client(app: FastAPI, client_host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _warm(app: FastAPI, *paths: str) -> None:
    """Serve each path once unprofiled, as `fastpost profile` does: FastAPI builds a route's
    parameter models on its first request, and under 0.1 ms sampling that costs seconds."""
    async with _client(app, "192.0.2.1") as client:
        for path in paths:
            assert (await client.get(path)).status_code == 200


async def test_profile_1_from_loopback_returns_an_html_profile_of_the_request(
    profiling_app: FastAPI,
) -> None:
    await _warm(profiling_app, "/posts/?limit=5")
    async with _client(profiling_app, "127.0.0.1") as client:
        response = await client.get("/posts/?limit=5&profile=1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "pyinstrument" in response.text


async def test_profile_1_from_elsewhere_gets_the_normal_answer(profiling_app: FastAPI) -> None:
    async with _client(profiling_app, ELSEWHERE) as client:
        response = await client.get("/posts/?limit=5&profile=1")
    assert response.headers["content-type"] == "application/json"


async def test_an_admin_gets_a_profile_from_anywhere_with_either_token_scheme(
    profiling_app: FastAPI,
) -> None:
    admin = await _admin(profiling_app)
    token = admin.headers["Authorization"].split(" ", 1)[1]
    await _warm(profiling_app, "/posts/?limit=5", "/api/articles")
    async with _client(profiling_app, ELSEWHERE) as client:
        bearer = await client.get("/posts/?limit=5&profile=1", headers=admin.headers)
        realworld = await client.get(
            "/api/articles?profile=1", headers={"Authorization": f"Token {token}"}
        )
    assert _is_profile(bearer)
    assert _is_profile(realworld)


async def test_a_user_who_is_not_an_admin_or_no_longer_is_gets_the_normal_answer(
    profiling_app: FastAPI,
) -> None:
    ordinary = await _admin(profiling_app, is_admin=False)
    async with _client(profiling_app, ELSEWHERE) as client:
        answers = [
            await client.get("/posts/?limit=5&profile=1", headers=ordinary.headers),
            await client.get(
                "/posts/?limit=5&profile=1", headers={"Authorization": "Bearer not-a-jwt"}
            ),
        ]
    assert [r.headers["content-type"] for r in answers] == ["application/json"] * 2


async def test_in_production_loopback_alone_is_not_enough(
    production_profiling_app: FastAPI,
) -> None:
    admin = await _admin(production_profiling_app)
    await _warm(production_profiling_app, "/posts/?limit=5")
    async with _client(production_profiling_app, "127.0.0.1") as client:
        anonymous = await client.get("/posts/?limit=5&profile=1")
        as_admin = await client.get("/posts/?limit=5&profile=1", headers=admin.headers)
    assert anonymous.headers["content-type"] == "application/json"
    assert _is_profile(as_admin)


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


def test_fastpost_admin_grants_and_revokes_and_names_an_unknown_user(tmp_path: Path) -> None:
    env = environment(tmp_path)
    migrate_and_seed(
        env, tmp_path, "--users", "2", "--posts", "0", "--follows", "0", "--likes", "0"
    )

    granted = fastpost("admin", "grant", "testuser", env=env, cwd=tmp_path)
    assert granted.returncode == 0, granted.stderr
    assert "testuser is now an admin" in granted.stdout
    assert _is_admin_in(tmp_path, "testuser") is True
    revoked = fastpost("admin", "revoke", "testuser", env=env, cwd=tmp_path)
    assert "testuser is no longer an admin" in revoked.stdout
    assert _is_admin_in(tmp_path, "testuser") is False

    unknown = fastpost("admin", "grant", "nobody", env=env, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no user named 'nobody'" in unknown.stdout


def _is_admin_in(tmp_path: Path, username: str) -> bool:
    with sqlite3.connect(tmp_path / "data" / "fastpost.db") as conn:
        (value,) = conn.execute(
            "SELECT is_admin FROM users WHERE username = ?", (username,)
        ).fetchone()
    return bool(value)


def _own_section(stdout: str) -> str:
    return stdout.split("fastpost's own functions", 1)[1].split("Every function:", 1)[0]


def test_fastpost_profile_shows_the_uncached_path_and_the_apps_own_functions_first(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    migrate_and_seed(env, tmp_path, "--users", "5", "--posts", "30", "--likes", "0")
    args = ("profile", "GET", "/posts/?limit=20", "--top", "60")

    uncached = fastpost(*args, env=env, cwd=tmp_path)
    cached = fastpost(*args, "--cached", env=env, cwd=tmp_path)

    assert uncached.returncode == 0, uncached.stderr
    assert uncached.stdout.index("own functions") < uncached.stdout.index("Every function")
    # The warm-up filled no cache: the profiled request reads the database.
    assert "service.py:" in _own_section(uncached.stdout)
    assert "(list_posts)" in _own_section(uncached.stdout)
    assert "(fetch_all)" in _own_section(uncached.stdout)
    assert cached.returncode == 0, cached.stderr
    assert "(fetch_all)" not in _own_section(cached.stdout)


def test_fastpost_profile_needs_no_extra(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    # httpx comes with the dev and bench extras only: hide it, as on a plain install.
    hide_httpx = (
        "import sys; sys.modules['httpx'] = None; sys.argv[0] = 'fastpost'; "
        "from fastpost.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_httpx, "profile", "GET", "/health"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "GET /health -> 200" in result.stdout
