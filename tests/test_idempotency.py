"""Idempotency-Key on every POST: a retry gets the first answer and writes nothing twice.

On SQLite, and on PostgreSQL when FASTPOST_TEST_POSTGRES_URL is set (conftest's backends);
the instances of the cross-instance test share Redis too when one answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from fastpost.app import create_app
from fastpost.db import Database
from fastpost.idempotency import (
    MAX_KEY_LENGTH,
    Claimed,
    IdempotencyStore,
    InFlight,
    Mismatch,
    Stored,
    idempotency_keys,
    keeps,
    parse_key,
)
from fastpost.settings import Settings
from tests.conftest import PASSWORD, Factory, TestUser
from tests.helpers import local_redis_url

REDIS_URL = local_redis_url(14)


def new_key() -> str:
    # Unique per test: on PostgreSQL the table outlives each test (conftest truncates the
    # domain tables only) and user ids start again from 1.
    return str(uuid.uuid4())


def keyed(user: TestUser | None, key: str) -> dict[str, str]:
    return {**(user.headers if user else {}), "Idempotency-Key": f'"{key}"'}


async def count(db: Database, table: str) -> int:
    row = await db.fetch_one(text(f"SELECT count(*) AS n FROM {table}"))
    assert row is not None
    return int(row["n"])


async def stored_keys(db: Database, *keys: str) -> int:
    """How many of `keys` the idempotency table holds (on PostgreSQL it also holds other
    tests' keys)."""
    async with db.reader() as conn:
        rows = await conn.execute(select(func.count()).where(idempotency_keys.c.key.in_(keys)))
        return int(rows.scalar_one())


async def test_a_retried_post_makes_one_post_and_gets_the_first_answer_again(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())
    body = {"title": "Once", "content": "only once"}

    first = await client.post("/posts/", json=body, headers=headers)
    retry = await client.post("/posts/", json=body, headers=headers)

    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert retry.headers["idempotency-replayed"] == "true"
    assert "idempotency-replayed" not in first.headers
    assert await count(db, "posts") == 1


@pytest.mark.parametrize(
    ("path", "body", "table", "token_scheme"),
    [
        ("/posts/{post_id}/comments", {"body": "First!"}, "comments", "Bearer"),
        ("/api/articles", {"article": {"title": "T", "description": "D", "body": "B"}},
         "posts", "Token"),
        ("/api/articles/{slug}/comments", {"comment": {"body": "Nice"}}, "comments", "Token"),
    ],
)  # fmt: skip
async def test_each_kind_of_post_is_written_once_however_often_it_is_retried(
    client: httpx.AsyncClient,
    factory: Factory,
    db: Database,
    path: str,
    body: dict[str, Any],
    table: str,
    token_scheme: str,
) -> None:
    author = await factory.user()
    post_id = await factory.post(author, slug="a-post")
    token = author.headers["Authorization"].split(" ", 1)[1]
    headers = {"Authorization": f"{token_scheme} {token}", "Idempotency-Key": new_key()}
    before = await count(db, table)
    url = path.format(post_id=post_id, slug="a-post")

    answers = [await client.post(url, json=body, headers=headers) for _ in range(3)]

    assert [a.status_code for a in answers] == [201] * 3, answers[0].text
    assert len({a.content for a in answers}) == 1
    assert await count(db, table) == before + 1


async def test_a_retried_registration_makes_one_user(
    client: httpx.AsyncClient, db: Database
) -> None:
    body = {"username": "once", "email": "once@example.com", "password": PASSWORD}
    headers = {"Idempotency-Key": new_key()}

    first = await client.post("/auth/register", json=body, headers=headers)
    retry = await client.post("/auth/register", json=body, headers=headers)

    assert first.status_code == 201, first.text
    assert (retry.status_code, retry.content) == (201, first.content)
    assert await count(db, "users") == 1


async def test_ten_requests_with_one_key_at_once_make_one_post(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())
    body = {"title": "Burst", "content": "ten at once"}

    answers = await asyncio.gather(
        *(client.post("/posts/", json=body, headers=headers) for _ in range(10))
    )

    assert await count(db, "posts") == 1
    created = [a for a in answers if a.status_code == 201]
    in_flight = [a for a in answers if a.status_code == 409]
    assert len(created) + len(in_flight) == 10
    assert len({a.content for a in created}) == 1
    assert sum("idempotency-replayed" not in a.headers for a in created) == 1
    for answer in in_flight:
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["code"] == "idempotency_key_in_flight"
    # Once the first has answered, every retry gets its answer.
    retry = await client.post("/posts/", json=body, headers=headers)
    assert (retry.status_code, retry.content) == (201, created[0].content)


async def test_the_same_key_with_another_body_is_refused_with_422(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())
    await client.post("/posts/", json={"title": "A", "content": "a"}, headers=headers)

    other = await client.post("/posts/", json={"title": "B", "content": "b"}, headers=headers)

    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count(db, "posts") == 1


async def test_the_same_key_on_another_path_is_refused_with_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    headers = keyed(author, new_key())
    await client.post(f"/posts/{post_id}/comments", json={"body": "x"}, headers=headers)

    other = await client.post(f"/posts/{post_id}/like", json={"body": "x"}, headers=headers)

    assert other.status_code == 422


async def test_realworld_paths_answer_key_errors_in_the_realworld_shape(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())
    article = {"article": {"title": "T", "description": "D", "body": "B"}}
    await client.post("/api/articles", json=article, headers=headers)

    other = await client.post("/api/articles", json={"article": {}}, headers=headers)

    assert other.status_code == 422
    assert list(other.json()["errors"]) == ["Idempotency-Key"]


async def test_another_users_key_does_not_replay_the_first_users_answer(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    alice, bob = await factory.users(2)
    key = new_key()
    body = {"title": "Same", "content": "same body"}

    by_alice = await client.post("/posts/", json=body, headers=keyed(alice, key))
    by_bob = await client.post("/posts/", json=body, headers=keyed(bob, key))

    assert by_alice.status_code == by_bob.status_code == 201
    assert "idempotency-replayed" not in by_bob.headers
    assert by_bob.json()["author"]["id"] == bob.id
    assert await count(db, "posts") == 2


async def test_a_new_token_of_the_same_user_still_replays(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    key = new_key()
    body = {"title": "T", "content": "c"}
    await client.post("/posts/", json=body, headers=keyed(author, key))
    # A later token for the same user (issued a second later, so a different string).
    token = app.state.tokens.issue(author.id, lifetime=7200).access_token
    assert token not in author.headers["Authorization"]

    retry = await client.post(
        "/posts/", json=body, headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    )

    assert retry.headers["idempotency-replayed"] == "true"
    assert await count(db, "posts") == 1


async def test_a_forged_token_does_not_reach_anyone_elses_answers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    key = new_key()
    body = {"title": "T", "content": "c"}
    await client.post("/posts/", json=body, headers=keyed(author, key))
    header, claims, _ = author.headers["Authorization"].split(" ", 1)[1].split(".")

    forged = await client.post(
        "/posts/",
        json=body,
        headers={"Authorization": f"Bearer {header}.{claims}.AAAA", "Idempotency-Key": key},
    )

    assert forged.status_code == 401
    assert "idempotency-replayed" not in forged.headers


async def test_without_a_key_every_post_runs(
    client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    body = {"title": "T", "content": "c"}

    answers = [await client.post("/posts/", json=body, headers=author.headers) for _ in range(2)]

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["id"] != answers[1].json()["id"]
    assert await count(db, "posts") == 2


@pytest.mark.parametrize(
    "values",
    [[""], ['""'], ["x" * (MAX_KEY_LENGTH + 1)], ["caf\u00e9"], ["one", "two"]],
    ids=["empty", "empty-string", "too-long", "not-ascii", "twice"],
)
async def test_a_malformed_key_is_refused_with_422_naming_the_header(
    client: httpx.AsyncClient, factory: Factory, db: Database, values: list[str]
) -> None:
    author = await factory.user()
    headers = [("Authorization", author.headers["Authorization"])]
    headers += [("Idempotency-Key", v) for v in values]

    answer = await client.post(
        "/posts/",
        json={"title": "T", "content": "c"},
        headers=[(n.encode(), v.encode()) for n, v in headers],
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count(db, "posts") == 0


def test_keys_are_structured_field_strings_or_bare_tokens() -> None:
    assert parse_key(b'"8e03978e-40d5-43e8-bc93-6894a57f9324"') == (
        "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )
    assert parse_key(b"8e03978e") == "8e03978e"
    assert parse_key(b'"a\\"b"') == 'a"b'
    assert parse_key(b"k" * MAX_KEY_LENGTH) == "k" * MAX_KEY_LENGTH
    assert parse_key(b"k" * (MAX_KEY_LENGTH + 1)) is None
    assert parse_key(b"a\x01b") is None


async def test_a_validation_error_is_kept_and_replayed(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())

    first = await client.post("/posts/", json={"title": ""}, headers=headers)
    retry = await client.post("/posts/", json={"title": ""}, headers=headers)

    assert first.status_code == 422
    assert (retry.status_code, retry.content) == (422, first.content)
    assert retry.headers["idempotency-replayed"] == "true"


def test_only_answers_a_retry_should_see_again_are_kept() -> None:
    assert all(keeps(status) for status in (200, 201, 204, 400, 401, 404, 409, 413, 422))
    assert not any(keeps(status) for status in (408, 425, 429, 500, 502, 503, 504, 302))


class FailingOnce:
    """A route that fails its first call (as `failure` says) and creates on the next."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.calls = 0

    async def __call__(self) -> JSONResponse:
        self.calls += 1
        if self.calls == 1:
            if self.failure == "raise":
                raise RuntimeError("failed on purpose")
            return JSONResponse({"detail": "try again"}, 503)
        return JSONResponse({"created": self.calls}, 201)


@pytest.mark.parametrize("failure", ["raise", "503"])
async def test_a_server_error_frees_the_key_so_that_a_retry_runs(
    app: FastAPI, db: Database, failure: str
) -> None:
    route = FailingOnce(failure)
    app.add_api_route("/test-failing-once", route, methods=["POST"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.post("/test-failing-once", json={}, headers=headers)
        assert first.status_code in (500, 503)
        assert await stored_keys(db, key) == 0
        retry = await client.post("/test-failing-once", json={}, headers=headers)
        again = await client.post("/test-failing-once", json={}, headers=headers)

    assert (retry.status_code, retry.json()) == (201, {"created": 2})
    assert (again.status_code, again.content) == (201, retry.content)
    assert route.calls == 2


async def test_a_body_over_the_limit_with_a_key_is_refused_with_413(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    limit = app.state.settings.api.max_body_bytes
    key = new_key()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"title": "T", "content": "'
        yield b"x" * limit
        yield b'"}'

    answer = await client.post(
        "/posts/",
        content=chunks(),
        headers={**keyed(author, key), "Content-Type": "application/json"},
    )

    assert answer.status_code == 413
    assert await stored_keys(db, key) == 0


async def test_a_key_whose_holder_died_is_taken_over_once_its_lock_runs_out(
    db: Database,
) -> None:
    store = IdempotencyStore(db, ttl_seconds=3600, lock_seconds=0.2)
    key = new_key()
    first = await store.claim(caller="anonymous", key=key, fingerprint="f")
    assert isinstance(first, Claimed)
    assert isinstance(await store.claim(caller="anonymous", key=key, fingerprint="f"), InFlight)
    assert isinstance(await store.claim(caller="anonymous", key=key, fingerprint="g"), Mismatch)

    await asyncio.sleep(0.3)  # the holder never answered
    second = await store.claim(caller="anonymous", key=key, fingerprint="f")

    assert isinstance(second, Claimed)
    # The dead holder can no longer fill the key in.
    await store.fill_in(
        caller="anonymous", key=key, owner=first.owner, answer=Stored(201, [], b"old", None)
    )
    assert isinstance(await store.claim(caller="anonymous", key=key, fingerprint="f"), InFlight)


async def test_an_expired_key_starts_afresh_and_expired_keys_are_deleted(db: Database) -> None:
    store = IdempotencyStore(db, ttl_seconds=1, lock_seconds=60)
    old, other = new_key(), new_key()
    for key in (old, other):
        claim = await store.claim(caller="anonymous", key=key, fingerprint="f")
        assert isinstance(claim, Claimed)
        await store.fill_in(
            caller="anonymous", key=key, owner=claim.owner, answer=Stored(201, [], b"{}", None)
        )
    assert isinstance(await store.claim(caller="anonymous", key=old, fingerprint="f"), Stored)

    await asyncio.sleep(1.1)
    again = await store.claim(caller="anonymous", key=old, fingerprint="another request")
    assert isinstance(again, Claimed)
    assert await stored_keys(db, old, other) == 2  # no clean-up due yet in this process

    # A process's first claim, and one every CLEANUP_INTERVAL_SECONDS, deletes expired keys.
    newer = IdempotencyStore(db, ttl_seconds=1, lock_seconds=60)
    assert isinstance(
        await newer.claim(caller="anonymous", key=new_key(), fingerprint="f"), Claimed
    )
    assert await stored_keys(db, old, other) == 1


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def settings_with_redis(settings: Settings) -> Settings:
    if _redis_answers():
        return settings.model_copy(update={"redis_url": REDIS_URL})
    return settings


async def test_a_retry_through_another_instance_gets_the_first_answer(
    settings_with_redis: Settings, factory: Factory, db: Database
) -> None:
    author = await factory.user()
    headers = keyed(author, new_key())
    body = {"title": "T", "content": "c"}
    answers = []
    for _ in range(2):  # two instances, each with its own app state
        application = create_app(settings_with_redis)
        transport = httpx.ASGITransport(app=application)
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            answers.append(await client.post("/posts/", json=body, headers=headers))

    assert answers[0].status_code == answers[1].status_code == 201
    assert answers[1].content == answers[0].content
    assert answers[1].headers["idempotency-replayed"] == "true"
    assert await count(db, "posts") == 1


async def test_a_replay_carries_the_answers_headers_but_not_its_cookies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def create() -> JSONResponse:
        response = JSONResponse({"id": 7}, 201, headers={"Location": "/things/7"})
        # A client's state as of this answer (as the read-your-writes position is).
        response.set_cookie("position", "0/16B3748")
        return response

    app.add_api_route("/test-with-cookie", create, methods=["POST"])
    headers = {"Idempotency-Key": new_key()}

    first = await client.post("/test-with-cookie", json={}, headers=headers)
    client.cookies.clear()
    retry = await client.post("/test-with-cookie", json={}, headers=headers)

    assert "set-cookie" in first.headers
    assert retry.headers["idempotency-replayed"] == "true"
    assert retry.headers["location"] == "/things/7"
    assert "set-cookie" not in retry.headers


async def test_browser_pages_of_allowed_origins_may_send_a_key_and_read_the_replay_mark(
    settings: Settings,
) -> None:
    origin = "http://front.example"
    application = create_app(settings.model_copy(update={"cors_origins": [origin]}))
    transport = httpx.ASGITransport(app=application)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        preflight = await client.options(
            "/posts/",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key",
            },
        )
        keyed_post = await client.post(
            "/auth/register",
            json={"username": "cors", "email": "cors@example.com", "password": PASSWORD},
            headers={"Origin": origin, "Idempotency-Key": new_key()},
        )

    assert preflight.status_code == 200
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    assert keyed_post.headers["access-control-expose-headers"] == "Idempotency-Replayed"
