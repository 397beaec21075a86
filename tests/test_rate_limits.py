"""Rate limits (fastpost.rate_limits): logins and registrations per address and account,
writes per user, search and feeds per address; 429 in each API's error shape with
Retry-After and the IETF draft's RateLimit fields; counters shared through Redis, and kept
in memory while Redis is down."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.cluster.processes import free_port
from fastpost.rate_limits import RateLimitLayer
from fastpost.settings import RateLimitSettings, Settings
from tests.conftest import PASSWORD, Factory
from tests.helpers import local_redis_url

REDIS_URL = os.environ.get("FASTPOST_TEST_REDIS_URL") or local_redis_url(15)
# Budgets the tests do not mean to reach.
HIGH = "1000/minute"


def limits(**budgets: str) -> RateLimitSettings:
    fields = {
        name: HIGH
        for name in (
            "login_per_ip",
            "login_per_account",
            "register_per_ip",
            "writes_per_user",
            "expensive_reads_per_ip",
        )
    }
    # On whatever the environment: by default only production counts.
    return RateLimitSettings(enabled=True, **{**fields, **budgets})


def a_client_address() -> str:
    """An address no other test (nor an earlier run, in a shared Redis) has counted."""
    return "127." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


@asynccontextmanager
async def serving(
    settings: Settings, *, address: str | None = None, **changes: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings.model_copy(update=changes))
    transport = httpx.ASGITransport(app=app, client=(address or a_client_address(), 4321))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield app, client


def assert_429(answer: httpx.Response, policy: str, quota: int, window: int) -> None:
    assert answer.status_code == 429, answer.text
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= window
    assert answer.headers["ratelimit-policy"] == f'"{policy}";q={quota};w={window}'
    assert answer.headers["ratelimit"] == f'"{policy}";r=0;t={retry_after}'


def login(username: str, password: str = PASSWORD) -> dict[str, str]:
    return {"username": username, "password": password}


def realworld_login(email: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"user": {"email": email, "password": password}}


async def test_logins_per_address_answer_429_in_the_native_shape_whatever_the_account(
    settings: Settings,
) -> None:
    async with serving(settings, rate_limits=limits(login_per_ip="3/minute")) as (app, client):
        await Factory(app).user("alice")
        for username in ("alice", "bob", "carol"):  # right or wrong, each attempt counts
            answer = await client.post("/auth/login", json=login(username))
            assert answer.status_code in (200, 401)
        refused = await client.post("/auth/login", json=login("alice"))
        assert_429(refused, "login-ip", 3, 60)
        assert refused.json()["code"] == "rate_limited"
        assert set(refused.json()) == {"detail", "code"}
        # The budget is the address's: another client still logs in.
        transport = httpx.ASGITransport(app=app, client=(a_client_address(), 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
            assert (await other.post("/auth/login", json=login("alice"))).status_code == 200


async def test_logins_per_account_count_across_addresses_and_letter_case_in_realworld_shape(
    settings: Settings,
) -> None:
    budgets = limits(login_per_account="2/minute")
    async with serving(settings, rate_limits=budgets) as (app, client):
        await Factory(app).user("dora", email="dora@example.com")
        await Factory(app).user("eric", email="eric@example.com")
        wrong = await client.post("/api/users/login", json=realworld_login("dora@example.com", "x"))
        assert wrong.status_code == 401
        transport = httpx.ASGITransport(app=app, client=(a_client_address(), 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as elsewhere:
            second = await elsewhere.post(
                "/api/users/login", json=realworld_login("DORA@example.com", "y")
            )
            assert second.status_code == 401
            refused = await elsewhere.post(
                "/api/users/login", json=realworld_login("dora@example.com")
            )
        assert_429(refused, "login-account", 2, 60)
        assert list(refused.json()) == ["errors"]
        # Another account is not held back by dora's budget.
        other = await client.post("/api/users/login", json=realworld_login("eric@example.com"))
        assert other.status_code == 200


async def test_registrations_per_address_in_both_apis(settings: Settings) -> None:
    async with serving(settings, rate_limits=limits(register_per_ip="2/hour")) as (_, client):
        first = await client.post(
            "/auth/register",
            json={"username": "fay", "email": "fay@example.com", "password": PASSWORD},
        )
        assert first.status_code == 201
        second = await client.post(
            "/api/users",
            json={"user": {"username": "gus", "email": "gus@example.com", "password": PASSWORD}},
        )
        assert second.status_code == 201
        refused = await client.post(
            "/api/users",
            json={"user": {"username": "hal", "email": "hal@example.com", "password": PASSWORD}},
        )
        assert_429(refused, "register-ip", 2, 3600)
        assert "errors" in refused.json()
        native = await client.post(
            "/auth/register",
            json={"username": "ida", "email": "ida@example.com", "password": PASSWORD},
        )
        assert_429(native, "register-ip", 2, 3600)
        assert native.json()["code"] == "rate_limited"


async def test_writes_per_user_across_routes_and_apis_not_per_address(settings: Settings) -> None:
    async with serving(settings, rate_limits=limits(writes_per_user="3/minute")) as (app, client):
        factory = Factory(app)
        jay, kim = await factory.user("jay"), await factory.user("kim")
        post = await client.post(
            "/posts/", json={"title": "t", "content": "c"}, headers=jay.headers
        )
        assert post.status_code == 201
        post_id = post.json()["id"]
        assert (await client.post(f"/posts/{post_id}/like", headers=jay.headers)).is_success
        token = jay.headers["Authorization"].split()[1]
        article = await client.post(
            "/api/articles",
            json={"article": {"title": "a", "description": "d", "body": "b"}},
            headers={"Authorization": f"Token {token}"},
        )
        assert article.status_code == 201
        refused = await client.delete(f"/posts/{post_id}/like", headers=jay.headers)
        assert_429(refused, "writes-user", 3, 60)
        assert refused.json()["code"] == "rate_limited"
        realworld = await client.post(
            "/api/profiles/kim/follow", headers={"Authorization": f"Token {token}"}
        )
        assert_429(realworld, "writes-user", 3, 60)
        assert "errors" in realworld.json()
        # Kim writes from the same address; anonymous writes are refused as before (401).
        assert (await client.post(f"/posts/{post_id}/like", headers=kim.headers)).is_success
        assert (await client.post(f"/posts/{post_id}/like")).status_code == 401
        # Reads are not writes.
        assert (await client.get(f"/posts/{post_id}", headers=jay.headers)).status_code == 200


async def test_search_and_feeds_per_address_and_other_reads_unlimited(settings: Settings) -> None:
    budgets = limits(expensive_reads_per_ip="2/minute")
    async with serving(settings, rate_limits=budgets) as (app, client):
        user = await Factory(app).user("lea")
        token = user.headers["Authorization"].split()[1]
        assert (await client.get("/posts/search", params={"q": "x"})).status_code == 200
        assert (await client.get("/feed", headers=user.headers)).status_code == 200
        refused = await client.get(
            "/api/articles/feed", headers={"Authorization": f"Token {token}"}
        )
        assert_429(refused, "expensive-reads-ip", 2, 60)
        assert "errors" in refused.json()
        for _ in range(5):
            assert (await client.get("/posts/")).status_code == 200
            assert (await client.get("/api/articles")).status_code == 200


async def test_turned_off_there_is_no_layer_and_no_limit(settings: Settings) -> None:
    off = RateLimitSettings(enabled=False, login_per_ip="1/minute")
    async with serving(settings, rate_limits=off) as (app, client):
        assert app.state.rate_limits is None
        assert all(m.cls is not RateLimitLayer for m in app.user_middleware)
        await Factory(app).user("max")
        for _ in range(5):
            assert (await client.post("/auth/login", json=login("max"))).status_code == 200


async def test_openapi_declares_429_on_the_limited_routes_only(settings: Settings) -> None:
    async with serving(settings, rate_limits=limits()) as (_, client):
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "429" in paths["/posts/"]["post"]["responses"]
    assert "429" in paths["/auth/login"]["post"]["responses"]
    assert "429" in paths["/posts/search"]["get"]["responses"]
    realworld = paths["/api/articles/{slug}"]["delete"]["responses"]["429"]
    assert realworld["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorsOut")
    assert "429" not in paths["/posts/{post_id}"]["get"]["responses"]


def test_a_budget_the_limits_library_cannot_read_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="login_per_ip"):
        RateLimitSettings(login_per_ip="often")
    assert RateLimitSettings(writes_per_user="").writes_per_user == ""


# --- Redis: shared counters, and the fallback while it is down ---------------------------


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _redis_answers(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


@contextmanager
def redis_server(directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own on `port` (never the machine's shared one)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(f"redis://127.0.0.1:{port}/0"):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_workers_share_their_counters_through_redis(
    settings: Settings, redis_url: str
) -> None:
    address = a_client_address()
    budgets = limits(expensive_reads_per_ip="3/minute")
    async with (
        serving(settings, address=address, rate_limits=budgets, redis_url=redis_url) as (_, one),
        serving(settings, address=address, rate_limits=budgets, redis_url=redis_url) as (_, two),
    ):
        assert (await one.get("/posts/search", params={"q": "a"})).status_code == 200
        assert (await two.get("/posts/search", params={"q": "a"})).status_code == 200
        assert (await one.get("/posts/search", params={"q": "a"})).status_code == 200
        assert_429(await two.get("/posts/search", params={"q": "a"}), "expensive-reads-ip", 3, 60)
    keys = redis.Redis.from_url(redis_url).keys(f"fastpost:ratelimit:*{address}*")
    assert keys, "the counters were not kept in Redis"


async def test_with_redis_down_the_limits_hold_in_memory_and_nothing_fails(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    nobody_there = f"redis://127.0.0.1:{free_port()}/0"
    budgets = limits(login_per_ip="3/minute")
    with caplog.at_level(logging.WARNING, logger="fastpost.rate_limits"):
        async with serving(settings, rate_limits=budgets, redis_url=nobody_there) as (app, c):
            await Factory(app).user("ned")
            for _ in range(3):
                assert (await c.post("/auth/login", json=login("ned"))).status_code == 200
            assert_429(await c.post("/auth/login", json=login("ned")), "login-ip", 3, 60)
    warnings = [r for r in caplog.records if r.name == "fastpost.rate_limits"]
    assert len(warnings) == 1, "one line per outage, not one per request"
    assert "memory" in warnings[0].getMessage()


async def test_redis_killed_and_restarted_limits_go_on_in_memory_then_in_redis_again(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No back-off: the test needs no sleep to see Redis used again.
    monkeypatch.setattr("fastpost.rate_limits.REDIS_BACKOFF_SECONDS", 0.0)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    budgets = limits(expensive_reads_per_ip="4/minute")
    address = a_client_address()
    async with serving(settings, address=address, rate_limits=budgets, redis_url=url) as (
        app,
        client,
    ):
        with redis_server(tmp_path, port):
            assert (await client.get("/posts/search", params={"q": "a"})).status_code == 200
            assert redis.Redis.from_url(url).keys("fastpost:ratelimit:*")
        # Killed: answered all the same, counted in memory.
        for _ in range(4):
            assert (await client.get("/posts/search", params={"q": "a"})).status_code == 200
        assert app.state.rate_limits.using_memory_since is not None
        assert_429(
            await client.get("/posts/search", params={"q": "a"}), "expensive-reads-ip", 4, 60
        )
        with redis_server(tmp_path, port):
            # Back: counted in Redis again (a fresh server, so a fresh budget).
            assert (await client.get("/posts/search", params={"q": "a"})).status_code == 200
            assert app.state.rate_limits.using_memory_since is None
            assert redis.Redis.from_url(url).keys(f"fastpost:ratelimit:*{address}*")


async def test_a_redis_cluster_url_gets_the_libraries_cluster_storage_and_its_client_closes() -> (
    None
):
    # fastpost.rate_limits closes the cluster storage's client through an attribute that
    # `limits` does not document: this fails loudly the day it moves.
    from fastpost.rate_limits import RateLimits

    rate_limits = RateLimits(limits(), f"redis+cluster://127.0.0.1:{free_port()}")
    storage = rate_limits._storage(f"redis+cluster://127.0.0.1:{free_port()}")
    assert type(storage).__name__ == "RedisClusterStorage"
    assert callable(rate_limits._client.aclose)
    await rate_limits.close()


async def test_a_frozen_redis_is_a_redis_down_not_a_hung_request(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    budgets = limits(expensive_reads_per_ip="2/minute")
    async with serving(settings, rate_limits=budgets, redis_url=f"redis://127.0.0.1:{port}/0") as (
        app,
        client,
    ):
        with redis_server(tmp_path, port) as server:
            assert (await client.get("/posts/search", params={"q": "a"})).status_code == 200
            server.send_signal(signal.SIGSTOP)  # as a stuck host looks: no answer at all
            try:
                # Bounded by the Redis timeout (0.25 s by default), not by the kernel's.
                async with asyncio.timeout(10):
                    answer = await client.get("/posts/search", params={"q": "a"})
                assert answer.status_code == 200
                assert app.state.rate_limits.using_memory_since is not None
            finally:
                server.send_signal(signal.SIGCONT)


def test_by_default_only_production_counts() -> None:
    key = {"auth": {"secret_key": "k" * 64}}
    assert Settings(env="production", **key).rate_limited  # type: ignore[arg-type]
    assert not Settings(env="development").rate_limited
    assert Settings(env="development", rate_limits=RateLimitSettings(enabled=True)).rate_limited
    assert not Settings(
        env="production", rate_limits=RateLimitSettings(enabled=False), **key
    ).rate_limited  # type: ignore[arg-type]
