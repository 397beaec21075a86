"""No secret in any log, no 500 from any input.

Each input that once answered 500 (a login body that is not UTF-8 or nested too deep, a NUL
in a RealWorld path parameter, a validly signed token whose `sub` is no possible id) and
each place a credential may ride in (the path, the query string, the Authorization header)
is sent with secrets in it; every sink (JSON lines, console lines, the server's own lines
under `fastpost serve`, trace spans in tests/observability/test_tracing.py) is then
searched for them.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Request

from fastpost.observability.access_log import AccessLog
from fastpost.observability.logging import configure_logging
from tests.conftest import TEST_SECRET, Factory
from tests.helpers import environment, fastpost, serve_fastpost

SECRET_PASSWORD = "Hunter2-never-logged-9f8e7d"
# The shape of what redaction looks for, but signed by nobody: a JWT in a URL.
STRAY_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdHJheSJ9.c3RyYXktc2lnbmF0dXJlLXh5eg"
_PARAMETER = re.compile(r"\{(\w+)\}")


class Sink:
    """What the app logs, in one format, from here on."""

    def __init__(self, json_lines: bool, access_log: AccessLog) -> None:
        self.json = json_lines
        self.stream = io.StringIO()
        self.access_log = access_log
        configure_logging(level="INFO", json=json_lines, stream=self.stream, access_log=access_log)

    @property
    def text(self) -> str:
        self.access_log.flush()
        return self.stream.getvalue()


@pytest.fixture(params=["json", "console"])
def sink(request: pytest.FixtureRequest, app: FastAPI) -> Iterator[Sink]:
    yield Sink(request.param == "json", app.state.observability.access_log)
    configure_logging(level="INFO", json=False)


@pytest.fixture
async def raw_client(app: FastAPI) -> Any:
    # Errors the app re-raises after its 500 (as Starlette does) stay inside the app, as
    # under a server, instead of failing the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _nested(depth: int = 100_000) -> bytes:
    return (
        b'{"username":"x","password":"'
        + SECRET_PASSWORD.encode()
        + b'","d":'
        + (b"[" * depth + b"]" * depth)
        + b"}"
    )


def _not_utf8(envelope: str | None = None) -> bytes:
    inner = b'"username":"x","email":"x@example.com","password":"' + SECRET_PASSWORD.encode()
    body = b"{" + inner + b'\xff\xfe"}'
    return b'{"%s":%s}' % (envelope.encode(), body) if envelope else body


def _json_body_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


def _realworld_string_parameter_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/") and _PARAMETER.search(path)
        for method in operations
    ]


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}... reached a log:\n{text[-3000:]}"


async def test_inputs_that_once_answered_500_answer_4xx_and_leave_no_secret_in_the_logs(
    app: FastAPI, raw_client: httpx.AsyncClient, factory: Factory, sink: Sink
) -> None:
    client = raw_client
    author = await factory.user("author")
    token = author.headers["Authorization"].removeprefix("Bearer ")
    slug = (
        await client.post(
            "/api/articles",
            json={"article": {"title": "T", "description": "D", "body": "B"}},
            headers={"Authorization": f"Token {token}"},
        )
    ).json()["article"]["slug"]
    answers: dict[str, int] = {}

    def answered(what: str, response: httpx.Response) -> None:
        answers[what] = response.status_code
        body = response.json()
        # The API's own error shape: RealWorld's under /api, the native one elsewhere.
        if response.request.url.path.startswith("/api/"):
            assert isinstance(body.get("errors"), dict), (what, body)
        else:
            assert {"detail", "code"} <= body.keys(), (what, body)

    json_type = {"Content-Type": "application/json"}
    # Request bodies that are not UTF-8, or nested past the parser's recursion: the login
    # routes, and every route that takes JSON, with a valid token.
    for method, path in _json_body_routes(app):
        concrete = _PARAMETER.sub(
            lambda m: {"slug": slug, "username": "author"}.get(m.group(1), "1"), path
        )
        scheme = "Token" if path.startswith("/api/") else "Bearer"
        headers = {**json_type, "Authorization": f"{scheme} {token}"}
        if path in ("/auth/login", "/auth/register", "/api/users", "/api/users/login"):
            headers = json_type
        for name, body in (("not utf-8", _not_utf8()), ("nested", _nested())):
            response = await client.request(method, concrete, content=body, headers=headers)
            answered(f"{name} {method} {path}", response)
    envelope = await client.post("/api/users/login", content=_not_utf8("user"), headers=json_type)
    answered("not utf-8 in the envelope", envelope)
    assert answers["not utf-8 POST /auth/login"] == 422
    assert answers["nested POST /auth/login"] == 422

    # A NUL in every RealWorld path parameter (slug, username, comment id).
    pairs = _realworld_string_parameter_routes(app)
    assert len(pairs) == 11, pairs
    for method, path in pairs:
        for parameter in _PARAMETER.findall(path):
            values = {"slug": slug, "username": "author", "id": "1", parameter: "a%00b"}
            concrete = _PARAMETER.sub(lambda m, v=values: v[m.group(1)], path)
            response = await client.request(
                method,
                concrete,
                headers={"Authorization": f"Token {token}"},
                json={} if method in ("POST", "PUT") else None,
            )
            answered(f"NUL {parameter} {method} {path}", response)
            assert response.status_code == 422, (method, concrete, response.text)

    # A validly signed token whose sub is out of range (it once overflowed the database).
    now = int(time.time())
    huge = jwt.encode({"sub": str(2**70), "iat": now, "exp": now + 60}, TEST_SECRET, "HS256")
    for method, path, scheme in (
        ("GET", "/users/me", "Bearer"),
        ("POST", "/api/articles", "Token"),
    ):
        response = await client.request(
            method, path, headers={"Authorization": f"{scheme} {huge}"}, json={}
        )
        answered(f"huge sub {path}", response)
        assert response.status_code == 401

    errors = {what: status for what, status in answers.items() if not 400 <= status < 500}
    assert errors == {}
    _assert_no_secret(sink.text, SECRET_PASSWORD, token, huge)
    if sink.json:
        for line in sink.text.splitlines():
            json.loads(line)


async def test_credentials_in_paths_query_strings_and_headers_are_masked_in_every_line(
    raw_client: httpx.AsyncClient, factory: Factory, sink: Sink
) -> None:
    user = await factory.user()
    token = user.headers["Authorization"].removeprefix("Bearer ")
    for path in (
        f"/posts/{STRAY_JWT}",
        f"/api/articles/{STRAY_JWT}",
        f"/api/profiles/{token}",
        f"/no/such/route/{token}",
        f"/users/password={SECRET_PASSWORD}",
    ):
        await raw_client.get(
            path,
            params={"access_token": token, "password": SECRET_PASSWORD, "x": STRAY_JWT},
            headers={"Authorization": f"Bearer {token}", "X-Api-Key": SECRET_PASSWORD},
        )
    text = sink.text
    assert text.count('"event":"request"' if sink.json else "request ") >= 5
    _assert_no_secret(text, SECRET_PASSWORD, token, STRAY_JWT)
    assert "[redacted]" in text


async def test_an_unhandled_error_logs_one_masked_traceback_without_local_variables(
    app: FastAPI, raw_client: httpx.AsyncClient, factory: Factory, sink: Sink
) -> None:
    user = await factory.user()
    token = user.headers["Authorization"].removeprefix("Bearer ")
    raised: list[BaseException] = []

    async def explode(request: Request) -> None:
        body = await request.body()
        password = SECRET_PASSWORD
        authorization = request.headers["authorization"]
        try:
            raise RuntimeError(f"could not handle {body!r} for {authorization}")
        except RuntimeError as exc:
            raised.append(exc)
            assert password
            assert authorization
            raise

    app.add_api_route("/explode", explode, methods=["POST"])
    response = await raw_client.post(
        "/explode",
        content=json.dumps({"username": "x", "password": SECRET_PASSWORD}),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 500
    # Answered inside the edge layer: its request id and the headers every response carries.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    # What the server does next with the error Starlette re-raised (uvicorn's logger):
    # nothing more, since fastpost logged it already ...
    logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=raised[0])
    # ... while an error the app never logged is written through the same masking.
    try:
        raise ValueError(f"stray {token}")
    except ValueError as stray:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=stray)

    text = sink.text
    _assert_no_secret(text, SECRET_PASSWORD, token)
    assert "password = " not in text  # no frame's local variables
    if sink.json:
        records = [json.loads(line) for line in text.splitlines()]
        tracebacks = [r for r in records if "exception" in r]
        assert [r["event"].split(" on ")[0] for r in tracebacks] == [
            "unhandled error",
            "Exception in ASGI application\n",
        ]
        assert "Traceback" in tracebacks[0]["exception"]
        assert "RuntimeError: could not handle" in tracebacks[0]["exception"]
        assert tracebacks[0]["request_id"] == response.headers["x-request-id"]
    else:
        assert text.count("Traceback (most recent call last)") == 2
        assert "RuntimeError: could not handle" in text


def test_fastpost_serve_in_production_writes_json_lines_only_masked_and_no_server_header(
    tmp_path: Path,
) -> None:
    env = {
        **environment(tmp_path),
        "FASTPOST_ENV": "production",
        "FASTPOST_AUTH__SECRET_KEY": TEST_SECRET,
    }
    upgraded = fastpost("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    # With the server's own access line on too: a sink that sees the query string.
    with (
        serve_fastpost("--access-log", env=env, cwd=tmp_path) as server,
        httpx.Client(base_url=server.base) as client,
    ):
        registered = client.post(
            "/auth/register",
            json={"username": "zoe", "email": "z@example.com", "password": SECRET_PASSWORD},
        )
        assert registered.status_code == 201
        token = client.post(
            "/auth/login", json={"username": "zoe", "password": SECRET_PASSWORD}
        ).json()["access_token"]
        bad_login = client.post(
            "/auth/login", content=_not_utf8(), headers={"Content-Type": "application/json"}
        )
        assert bad_login.status_code == 422
        read = client.get(
            f"/posts/{STRAY_JWT}",
            params={"access_token": token, "password": SECRET_PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert read.status_code == 422
        assert "server" not in read.headers
        assert "server-timing" not in read.headers
    # Read once the server has stopped: its access lines are written a batch at a time.
    log_text = server.log_path.read_text()
    _assert_no_secret(log_text, SECRET_PASSWORD, token, STRAY_JWT)
    # Every line is JSON, after the two lines `fastpost serve` prints for a person at the
    # terminal before the server starts (where it listens, which database).
    lines = [line for line in log_text.splitlines() if line.strip()]
    first_json = next(n for n, line in enumerate(lines) if line.startswith("{"))
    assert first_json <= 2, lines[:first_json]
    assert lines[0].startswith("fastpost on "), lines[0]
    records = [json.loads(line) for line in lines[first_json:]]
    served = [r for r in records if r["event"] == "request" and r["route"] == "/posts/{post_id}"]
    assert served[0]["path"] == "/posts/[redacted]"
    # The server's own access line, which shows the query string, is masked too.
    [server_line] = [r["event"] for r in records if '"GET /posts/' in r["event"]]
    assert "access_[redacted]" in server_line
    assert "[redacted]" in server_line.partition("&")[2]
