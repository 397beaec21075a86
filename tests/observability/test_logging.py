"""The access log: one structured line per request, tied to its request id, with no
credential anywhere in the output."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.observability.access_log import AccessLog
from fastpost.observability.logging import configure_logging
from fastpost.observability.request_stats import RequestStats
from fastpost.observability.served import UNMATCHED_ROUTE, ServedRequests
from fastpost.settings import Settings
from tests.conftest import PASSWORD, Factory
from tests.observability.conftest import LogLines


async def test_each_request_logs_one_access_line_with_route_status_timing_and_queries(
    client: httpx.AsyncClient, factory: Factory, logs: LogLines
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    response = await client.get(f"/posts/{post_id}", headers=author.headers)
    assert response.status_code == 200
    [line] = logs.access()
    assert line["method"] == "GET"
    assert line["route"] == "/posts/{post_id}"
    assert line["path"] == f"/posts/{post_id}"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["db_queries"] >= 1
    assert line["db_ms"] > 0
    assert line["user_id"] == author.id
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["level"] == "info"
    assert "timestamp" in line


async def test_a_request_that_touched_nothing_logs_the_same_fields_with_zeros(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    response = await client.get("/health")
    [line] = logs.access()
    assert line == {
        "event": "request",
        "level": "info",
        "timestamp": line["timestamp"],
        "request_id": response.headers["x-request-id"],
        "method": "GET",
        "route": "/health",
        "path": "/health",
        "status": 200,
        "duration_ms": line["duration_ms"],
        "db_queries": 0,
        "db_ms": 0.0,
        "cache_hits": 0,
        "cache_misses": 0,
        "user_id": None,
    }
    assert isinstance(line["duration_ms"], float)


async def test_the_access_line_is_stamped_with_the_wall_clock_time_the_request_ended(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    # The line is made from the request's perf_counter time, a batch at a time: its stamp
    # must still be the UTC time at which the request ended.
    before = datetime.now(UTC)
    await client.get("/health")
    after = datetime.now(UTC)
    [line] = logs.access()
    assert line["timestamp"].endswith("Z")
    stamped = datetime.fromisoformat(line["timestamp"].removesuffix("Z")).replace(tzinfo=UTC)
    slack = timedelta(milliseconds=5)  # the two clocks' readings are not taken at once
    assert before - slack <= stamped <= after + slack


async def _get_health(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health")).status_code == 200


async def test_a_console_shows_each_access_line_as_its_request_ends(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings)  # tests log to a console, as development does
    try:
        async with app.router.lifespan_context(app):
            await _get_health(app)
            assert "path=/health" in capsys.readouterr().out
    finally:
        configure_logging(level="INFO", json=False)


async def test_json_access_lines_wait_for_their_batch_while_the_app_serves(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    observability = settings.observability.model_copy(update={"log_format": "json"})
    app = create_app(settings.model_copy(update={"observability": observability}))
    try:
        async with app.router.lifespan_context(app):
            await _get_health(app)
            assert '"path":"/health"' not in capsys.readouterr().out
            app.state.observability.access_log.flush()
            assert '"path":"/health"' in capsys.readouterr().out
    finally:
        configure_logging(level="INFO", json=False)


async def test_an_access_line_stays_valid_json_whatever_the_path_holds(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    # The line is printed into a template; the path is the one field a client chooses freely,
    # and the server logs it percent-decoded: quotes, a backslash, a tab, accents, a snowman.
    response = await client.get("/no/such/%22quoted%22%5Cback%09tab/%C3%A9t%C3%A9/%E2%98%83")
    assert response.status_code == 404
    [line] = logs.access()
    assert line["path"] == '/no/such/"quoted"\\back\ttab/\u00e9t\u00e9/\u2603'
    assert line["route"] == UNMATCHED_ROUTE
    assert line["user_id"] is None
    assert line["timestamp"].endswith("Z")


async def test_a_post_served_from_the_cache_before_routing_is_labelled_by_its_route(
    client: httpx.AsyncClient, factory: Factory, logs: LogLines
) -> None:
    post_id = await factory.post(await factory.user())
    assert (await client.get(f"/posts/{post_id}")).status_code == 200  # loads and caches
    assert (await client.get(f"/posts/{post_id}")).status_code == 200  # a hit, not routed

    miss, hit = logs.access()
    assert (miss["cache_misses"], hit["cache_hits"]) == (1, 1)
    assert miss["route"] == hit["route"] == "/posts/{post_id}"


async def test_a_realworld_caller_is_named_in_the_access_line(
    client: httpx.AsyncClient, factory: Factory, logs: LogLines
) -> None:
    user = await factory.user()
    token = user.headers["Authorization"].split(" ", 1)[1]
    response = await client.get("/api/user", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 200
    [line] = logs.access()
    assert line["route"] == "/api/user"
    assert line["user_id"] == user.id


async def test_a_sane_incoming_request_id_is_kept_and_returned(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "edge-7f3a.42"})
    assert response.headers["x-request-id"] == "edge-7f3a.42"
    assert logs.access()[0]["request_id"] == "edge-7f3a.42"


async def test_an_insane_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    forged = 'x" level=error msg="forged'
    response = await client.get("/health", headers={"X-Request-ID": forged})
    returned = response.headers["x-request-id"]
    assert returned != forged
    assert len(returned) == 16
    assert forged not in logs.text


async def test_requests_get_distinct_generated_ids(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_everything_logged_during_a_request_carries_its_request_id(
    app: FastAPI, client: httpx.AsyncClient, logs: LogLines
) -> None:
    async def noisy() -> dict[str, str]:
        logging.getLogger("fastpost.test").warning("from the standard library")
        return {}

    app.add_api_route("/noisy", noisy)
    await client.get("/noisy", headers={"X-Request-ID": "trace-me"})
    [stdlib_line] = [r for r in logs.records() if r["event"] == "from the standard library"]
    assert stdlib_line["request_id"] == "trace-me"
    assert stdlib_line["level"] == "warning"
    # And nothing leaks to lines logged after the request.
    logging.getLogger("fastpost.test").warning("after")
    [after] = [r for r in logs.records() if r["event"] == "after"]
    assert "request_id" not in after


async def test_no_password_token_or_secret_ever_reaches_the_log(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, logs: LogLines
) -> None:
    user = await factory.user("alice")
    registered = await client.post(
        "/auth/register",
        json={"username": "bob", "email": "bob@example.com", "password": "hunter2-hunter2"},
    )
    assert registered.status_code == 201
    login = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    token = login.json()["access_token"]
    await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    await client.get("/users/me", headers={"Authorization": "Bearer not-a-valid-token"})
    # Code that logs carelessly is caught too: by key name and by the look of the value.
    log = logging.getLogger("fastpost.careless")
    log.warning("login attempt password=%s", PASSWORD)
    log.warning("header was Bearer %s", token)
    import structlog

    structlog.get_logger("careless").info("user", password=PASSWORD, api_token=token)
    structlog.get_logger("careless").info("key", secret_key=app.state.settings.secret_key)

    text = logs.text
    assert "request" in text
    for secret in (
        PASSWORD,
        "hunter2-hunter2",
        token,
        token.split(".")[1],
        app.state.settings.secret_key,
        "not-a-valid-token",
    ):
        assert secret not in text
    assert user.headers["Authorization"].split()[1] not in text


async def test_access_lines_are_held_back_while_serving_and_all_written_by_shutdown(
    settings: Settings,
) -> None:
    stream = io.StringIO()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        configure_logging(
            level="INFO", json=True, stream=stream, access_log=app.state.observability.access_log
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(3):
                assert (await client.get("/health")).status_code == 200
        held_back = stream.getvalue()
    try:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        configure_logging(level="INFO", json=False)

    assert '"event":"request"' not in held_back  # no write per request
    assert [line["route"] for line in lines if line.get("event") == "request"] == ["/health"] * 3


def test_a_server_access_line_turned_off_stays_off() -> None:
    # As uvicorn leaves its access logger without --access-log: it then builds no line per
    # request, because its protocol asks hasHandlers() once per connection.
    server_access = logging.getLogger("uvicorn.access")
    server_access.handlers.clear()
    server_access.propagate = False
    try:
        configure_logging(level="INFO", stream=io.StringIO())
        assert not server_access.hasHandlers()
        # Turned on by the server (a handler of its own): sent on to fastpost's handler.
        server_access.addHandler(logging.StreamHandler(io.StringIO()))
        configure_logging(level="INFO", stream=io.StringIO())
        assert server_access.handlers == []
        assert server_access.propagate
        assert server_access.hasHandlers()
    finally:
        server_access.propagate = True


def test_access_lines_of_one_route_keep_each_request_s_method_status_path_and_duration() -> None:
    # A line's route fields are made once per method, route and status, and a duration
    # under 10 ms comes from a table: neither may leak from one request into another's line.
    access_log = AccessLog(ServedRequests())
    access_log.configure("INFO", json=True, stream=io.StringIO())
    served = [
        ("GET", "/health", "/health", 200, 0.00012),
        ("GET", "/health", "/health", 503, 0.0098765),
        ("HEAD", "/health", "/health", 200, 0.0),
        ("GET", "/posts/{post_id}", "/posts/7", 200, 0.0104),
        ("GET", "/posts/{post_id}", "/posts/8", 404, 12.3456),
        ("GET", "/health", "/health", 200, 0.00999),
    ]
    batch = []
    for method, route, path, status, seconds in served:
        stats = RequestStats(b"0123456789abcdef", time.perf_counter())
        stats.method, stats.route, stats.path, stats.status = method, route, path, status
        stats.duration, stats.ended = seconds, time.perf_counter()
        batch.append(stats)
    lines = [json.loads(line) for line in access_log._lines(batch).splitlines()]
    assert [
        (line["method"], line["route"], line["path"], line["status"], line["duration_ms"])
        for line in lines
    ] == [
        ("GET", "/health", "/health", 200, 0.12),
        ("GET", "/health", "/health", 503, 9.88),
        ("HEAD", "/health", "/health", 200, 0.0),
        ("GET", "/posts/{post_id}", "/posts/7", 200, 10.4),
        ("GET", "/posts/{post_id}", "/posts/8", 404, 12345.6),
        ("GET", "/health", "/health", 200, 9.99),
    ]
