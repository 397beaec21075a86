"""Logins under the hashing policy: old hashes upgraded, a login storm queued beside reads."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from fastapi import FastAPI
from sqlalchemy import select, update

from fastpost.settings import Settings
from fastpost.users.models import User
from tests.conftest import PASSWORD, Factory
from tests.helpers import GatedPasswords, database_of, wait_until, with_auth

# What fastpost hashed with before it followed OWASP's guidance (64 MiB, 3 passes, 4 lanes),
# shrunk to keep the test fast; the difference from the current parameters is what counts.
OLD_HASHER = PasswordHasher(time_cost=3, memory_cost=64, parallelism=4)


async def stored_hash(app: FastAPI, user_id: int) -> str:
    async with database_of(app, user_id).transaction() as session:
        value: str = await session.scalar(select(User.password_hash).where(User.id == user_id))
        return value


async def store_hash(app: FastAPI, user_id: int, password_hash: str) -> None:
    async with database_of(app, user_id).transaction() as session:
        await session.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )


def current_parameters(app: FastAPI) -> object:
    return extract_parameters(app.state.passwords.hash_sync("any"))


@pytest.mark.parametrize(
    "old_hasher",
    [OLD_HASHER, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I)],
    ids=["other-parameters", "argon2i"],
)
async def test_a_login_upgrades_a_hash_made_with_other_parameters_and_works_after(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory, old_hasher: PasswordHasher
) -> None:
    user = await factory.user("olga")
    old_hash = old_hasher.hash(PASSWORD)
    await store_hash(app, user.id, old_hash)

    first = await client.post("/auth/login", json={"username": "olga", "password": PASSWORD})
    assert first.status_code == 200
    upgraded = await stored_hash(app, user.id)
    assert upgraded != old_hash
    assert extract_parameters(upgraded) == current_parameters(app)

    again = await client.post("/auth/login", json={"username": "olga", "password": PASSWORD})
    assert again.status_code == 200
    assert await stored_hash(app, user.id) == upgraded  # up to date: left alone
    wrong = await client.post("/auth/login", json={"username": "olga", "password": "nope"})
    assert wrong.status_code == 401


async def test_a_failed_login_leaves_an_old_hash_as_it_is(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory
) -> None:
    user = await factory.user("pete")
    old_hash = OLD_HASHER.hash(PASSWORD)
    await store_hash(app, user.id, old_hash)
    response = await client.post("/auth/login", json={"username": "pete", "password": "nope"})
    assert response.status_code == 401
    assert await stored_hash(app, user.id) == old_hash


async def test_the_realworld_login_upgrades_old_hashes_too(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory
) -> None:
    user = await factory.user("quinn")
    await store_hash(app, user.id, OLD_HASHER.hash(PASSWORD))
    body = {"user": {"email": "quinn@example.com", "password": PASSWORD}}
    response = await client.post("/api/users/login", json=body)
    assert response.status_code == 200
    assert extract_parameters(await stored_hash(app, user.id)) == current_parameters(app)
    wrong = {"user": {"email": "quinn@example.com", "password": "nope"}}
    refused = await client.post("/api/users/login", json=wrong)
    assert refused.status_code == 401
    assert refused.json() == {"errors": {"credentials": ["invalid"]}}


async def test_reads_answer_while_a_login_storm_waits_for_the_hashing_slots(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory, settings: Settings
) -> None:
    await factory.user("rita")
    passwords = GatedPasswords(with_auth(settings, password_hash_concurrency=2))
    app.state.passwords = passwords
    body = {"username": "rita", "password": PASSWORD}
    logins = [asyncio.create_task(client.post("/auth/login", json=body)) for _ in range(20)]
    try:
        await wait_until(lambda: passwords.running == 2)
        # Two hashing, eighteen in line: the event loop is free and reads are served.
        async with asyncio.timeout(5):
            health = await client.get("/health")
            profile = await client.get("/users/me", headers=(await factory.user()).headers)
        assert (health.status_code, profile.status_code) == (200, 200)
        assert passwords.running == 2
    finally:
        passwords.gate.set()
        responses = await asyncio.gather(*logins)
    assert [r.status_code for r in responses] == [200] * 20
    assert passwords.most_at_once == 2


async def test_a_login_that_waits_past_the_queue_timeout_gets_503_with_retry_after(
    client: httpx.AsyncClient, app: FastAPI, factory: Factory, settings: Settings
) -> None:
    await factory.user("sam")
    passwords = GatedPasswords(
        with_auth(settings, password_hash_concurrency=1, password_queue_timeout_seconds=0.2)
    )
    app.state.passwords = passwords
    body = {"username": "sam", "password": PASSWORD}
    first = asyncio.create_task(client.post("/auth/login", json=body))
    try:
        await wait_until(lambda: passwords.running == 1)
        shed = await client.post("/auth/login", json=body)
    finally:
        passwords.gate.set()
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["code"] == "busy"
    assert (await first).status_code == 200
    # The queue drains: the next one is served.
    assert (await client.post("/auth/login", json=body)).status_code == 200
