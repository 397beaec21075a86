"""A database that stops, restarts or freezes: requests that need it get 503 with
Retry-After (fast, the connection kept open), the rest are served, and the app recovers by
itself when it is back, pooled connections included.

On a PostgreSQL server of the module's own (never the shared one): these tests stop it and
freeze it (SIGSTOP). The load version of the same scenarios is tests/faults/.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from fastpost.app import create_app
from fastpost.cluster import postgres
from fastpost.cluster.postgres import PgNode
from fastpost.db import Database, is_unavailable
from fastpost.migrations import upgrade
from fastpost.settings import DatabaseSettings, Settings
from tests.conftest import make_settings
from tests.helpers import postgres_cluster, postgres_missing_reason

# Short, so that the frozen cases end quickly; the defaults are in fastpost.settings.
TIMEOUT_SECONDS = 1.0
# A stopped server refuses connections at once: its 503s come well inside this.
FAST_SECONDS = 1.0
_titles = itertools.count()


# Each in a thread: the app serves on this event loop, and must see the server go as a
# separate server process would, while it happens.
async def stop(node: PgNode) -> None:
    await asyncio.to_thread(postgres.stop, node, mode="fast")


async def start(node: PgNode) -> None:
    await asyncio.to_thread(postgres.start, node)


# A read that no cache answers: it needs the database every time.
DB_READ = "/posts/search?q=text"
NEW_USER = {"username": "nobody", "email": "nobody@example.com", "password": "long enough pw"}


@pytest.fixture(scope="module")
def node() -> Iterator[PgNode]:
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster(apply_delays=()) as cluster:
        yield cluster.primary


@pytest.fixture(scope="module")
async def database_url(node: PgNode) -> str:
    url = node.url(driver="postgresql+asyncpg")
    db = Database(DatabaseSettings(url=url))
    await upgrade(db.write_engine, db.settings)
    await db.dispose()
    return url


def settings_for(url: str, **db: Any) -> Settings:
    settings = make_settings(url)
    timeouts = {
        "connect_timeout": TIMEOUT_SECONDS,
        "statement_timeout": TIMEOUT_SECONDS,
        "pool_timeout": TIMEOUT_SECONDS,
        **db,
    }
    return settings.model_copy(update={"db": settings.db.model_copy(update=timeouts)})


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


@pytest.fixture
async def served(database_url: str, node: PgNode) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings_for(database_url)) as (_, client):
        try:
            yield client
        finally:  # whatever the test did to the server, the next one finds it running
            if node.pid() is not None:
                postgres.thaw(node)
            await start(node)


async def log_in(client: httpx.AsyncClient) -> dict[str, str]:
    name = f"user{next(_titles)}x{time.monotonic_ns() % 10**6}"
    password = "correct horse battery"
    body = {"username": name, "email": f"{name}@example.com", "password": password}
    assert (await client.post("/auth/register", json=body)).status_code == 201
    login = await client.post("/auth/login", json={"username": name, "password": password})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def write(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    body = {"title": f"Post {next(_titles)}", "content": "text", "status": "published"}
    return await client.post("/posts/", json=body, headers=headers)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "connection" not in response.headers  # no "Connection: close": the client stays


async def until_ok(client: httpx.AsyncClient, path: str, within: float = 10) -> None:
    """Poll `path` until it answers 200: the app has recovered by itself."""
    async with asyncio.timeout(within):
        while (await client.get(path)).status_code != 200:  # noqa: ASYNC110 (a server's state)
            await asyncio.sleep(0.05)


async def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


async def test_a_stopped_database_gets_fast_503s_and_cached_reads_still_answer(
    served: httpx.AsyncClient, node: PgNode
) -> None:
    client = served
    headers = await log_in(client)
    post_id = (await write(client, headers)).json()["id"]
    assert (await client.get(f"/posts/{post_id}")).status_code == 200  # now in the cache

    await stop(node)

    for request in (
        client.get(DB_READ),
        write(client, headers),
        client.post("/auth/register", json=NEW_USER),
        client.post(
            "/posts/",
            json={"title": "t", "content": "c"},
            headers={**headers, "Idempotency-Key": "k-1"},
        ),
    ):
        response, seconds = await timed(request)
        assert_unavailable(response)
        assert response.json()["code"] == "unavailable"
        assert seconds < FAST_SECONDS
    realworld, _ = await timed(client.get("/api/articles"))
    assert_unavailable(realworld)
    assert list(realworld.json()) == ["errors"]  # the RealWorld shape
    cached = await client.get(f"/posts/{post_id}")
    assert cached.status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["database"] == "down"


async def test_the_app_recovers_by_itself_once_the_database_is_back(
    served: httpx.AsyncClient, node: PgNode
) -> None:
    client = served
    headers = await log_in(client)
    await stop(node)
    assert (await client.get(DB_READ)).status_code == 503
    await start(node)
    await until_ok(client, DB_READ)
    assert (await write(client, headers)).status_code == 201
    assert (await client.get("/health/ready")).status_code == 200


async def test_pooled_connections_are_fresh_after_a_restart(
    served: httpx.AsyncClient, node: PgNode
) -> None:
    """Every pooled connection, write pool included, was open when the server restarted:
    none of them answers the first request after it with an error."""
    client = served
    headers = await log_in(client)
    # Enough at once to open every connection of both pools (5 each in tests).
    many = 12
    before = await asyncio.gather(*(write(client, headers) for _ in range(many)))
    assert {r.status_code for r in before} == {201}
    reads = await asyncio.gather(*(client.get(DB_READ) for _ in range(many)))
    assert {r.status_code for r in reads} == {200}

    await stop(node)
    await start(node)

    writes = await asyncio.gather(*(write(client, headers) for _ in range(many)))
    assert [r.status_code for r in writes] == [201] * many
    reads = await asyncio.gather(*(client.get(DB_READ) for _ in range(many)))
    assert [r.status_code for r in reads] == [200] * many
    names = (f"restart{n}x{time.monotonic_ns() % 10**6}" for n in range(3))
    registered = await asyncio.gather(
        *(
            client.post(
                "/auth/register",
                json={"username": n, "email": f"{n}@example.com", "password": "long enough pw"},
            )
            for n in names
        )
    )
    assert [r.status_code for r in registered] == [201] * 3


async def test_a_frozen_database_is_answered_503_within_the_timeouts(
    served: httpx.AsyncClient, node: PgNode
) -> None:
    client = served
    headers = await log_in(client)
    await asyncio.gather(*(client.get(DB_READ) for _ in range(3)))  # pooled connections

    postgres.freeze(node)
    try:
        # Pooled connections time out on their statement, new ones on their connect, and
        # requests queued behind them on the pool wait: each within a few timeouts.
        requests = [client.get(DB_READ) for _ in range(8)] + [
            write(client, headers) for _ in range(8)
        ]
        answers = await asyncio.gather(*(timed(r) for r in requests))
        for response, seconds in answers:
            assert_unavailable(response)
            assert seconds < 3 * TIMEOUT_SECONDS + 1
        ready, seconds = await timed(client.get("/health/ready"))
        assert ready.status_code == 503
        assert seconds < 3 * TIMEOUT_SECONDS + 1
    finally:
        postgres.thaw(node)
    await until_ok(client, DB_READ)
    assert (await write(client, headers)).status_code == 201


async def test_readiness_keeps_its_own_timeout_on_a_frozen_database(
    database_url: str, node: PgNode
) -> None:
    """Without a statement timeout the readiness probe's own ends the wait: the connection
    it leaves behind is dropped, not released (a release would wait on the frozen server
    to acknowledge the cancel, for ever)."""
    from fastpost.health import READY_TIMEOUT_SECONDS

    settings = settings_for(database_url, statement_timeout=0, pool_timeout=30)
    async with serving(settings) as (_, client):
        assert (await client.get("/health/ready")).status_code == 200  # a pooled connection
        postgres.freeze(node)
        try:
            ready, seconds = await timed(client.get("/health/ready"))
        finally:
            postgres.thaw(node)
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("TimeoutError")
        assert seconds < READY_TIMEOUT_SECONDS + 1
        await until_ok(client, "/health/ready")


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (TimeoutError(), True),
        (sa_exc.TimeoutError("QueuePool limit of size 5 overflow 0 reached"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist'), False),
        (asyncpg.exceptions.PostgresSyntaxError("syntax error"), False),
        (asyncpg.InterfaceError("cannot use Connection.transaction() in a transaction"), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_an_unreachable_or_slow_database_is_unavailable(
    error: Exception, unavailable: bool
) -> None:
    """What becomes a 503 (try again) and what stays a 500 (a bug, which a retry repeats),
    raised bare or wrapped by SQLAlchemy as its DBAPIError."""
    assert is_unavailable(error) is unavailable
    wrapped = sa_exc.DBAPIError("SELECT 1", None, error)
    assert is_unavailable(wrapped) is unavailable
