"""Accounts behind tokens: a deactivated or deleted account's token is refused on every route
that authenticates, cheaply; one account per username whatever its case; one answer to every
failed login."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, insert, text
from sqlalchemy.exc import IntegrityError

from fastpost.cache_keys import user_tag
from fastpost.db import Database
from fastpost.migrations import downgrade, upgrade
from fastpost.security import Passwords, Verification
from fastpost.settings import DatabaseSettings
from fastpost.users import service
from fastpost.users.models import User
from tests.conftest import PASSWORD, Factory, TestUser
from tests.helpers import database_of, environment, fastpost

_PARAMETER = re.compile(r"\{(\w+)\}")


async def _authenticating_operations(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) whose OpenAPI operation names a security scheme: the
    route table's own list of what reads a token, so a new route is covered by itself."""
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert len(found) > 30  # both APIs
    return found


async def _fixtures(client: httpx.AsyncClient, factory: Factory) -> dict[str, Any]:
    """Ids, a slug, a username and a comment id that exist, for the path parameters."""
    author = await factory.user("author")
    post_id = await factory.post(author)
    token_headers = {"Authorization": author.headers["Authorization"].replace("Bearer", "Token")}
    article = await client.post(
        "/api/articles",
        json={"article": {"title": "T", "description": "D", "body": "B"}},
        headers=token_headers,
    )
    slug = article.json()["article"]["slug"]
    comment = await client.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": "c"}}, headers=token_headers
    )
    native_comment = await client.post(
        f"/posts/{post_id}/comments", json={"body": "c"}, headers=author.headers
    )
    return {
        "post_id": post_id,
        "user_id": author.id,
        "slug": slug,
        "username": author.username,
        "id": comment.json()["comment"]["id"],
        "comment_id": native_comment.json()["id"],
    }


async def _answers(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, values: dict[str, Any]
) -> dict[tuple[str, str], int]:
    token = user.headers["Authorization"].removeprefix("Bearer ")
    statuses = {}
    for method, template in await _authenticating_operations(app):
        path = _PARAMETER.sub(lambda m: str(values[m.group(1)]), template)
        scheme = "Token" if template.startswith("/api") else "Bearer"
        response = await client.request(
            method,
            path,
            headers={"Authorization": f"{scheme} {token}"},
            json={} if method in ("POST", "PUT", "PATCH") else None,
        )
        statuses[(method, template)] = response.status_code
    return statuses


async def test_a_deactivated_accounts_token_is_refused_on_every_route_that_authenticates(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    values = await _fixtures(client, factory)
    user = await factory.user("leaving")
    # While the account is active its token gets through (whatever each route then says:
    # an empty body's 422, another's post's 403) ...
    before = await _answers(client, app, user, values)
    assert [op for op, status in before.items() if status == 401] == []

    await service.set_active(
        db=database_of(app, user.id), cache=app.state.cache, username="leaving", active=False
    )

    # ... and from the next request on, nowhere: 401 before any route does anything.
    after = await _answers(client, app, user, values)
    assert {op: status for op, status in after.items() if status != 401} == {}
    # The post it could write before is not written now.
    assert (await client.get("/posts/", params={"author_id": user.id})).json()["items"] == []

    await service.set_active(
        db=database_of(app, user.id), cache=app.state.cache, username="leaving", active=True
    )
    assert (await client.get("/users/me", headers=user.headers)).status_code == 200


async def test_a_deleted_accounts_token_is_refused_on_every_route_that_authenticates(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    values = await _fixtures(client, factory)
    user = await factory.user("deleted")
    async with database_of(app, user.id).transaction() as session:
        await session.execute(delete(User).where(User.id == user.id))
    # As fastpost drops a closed account's entries (users.service.set_active); an account
    # deleted behind its back is refused within ME_TTL, when the cached entry expires.
    await app.state.cache.invalidate(tags=[user_tag(user.id)])
    statuses = await _answers(client, app, user, values)
    assert {op: status for op, status in statuses.items() if status != 401} == {}


async def test_the_account_check_adds_no_database_round_trip_to_the_mixed_workload(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    # The course's mixed workload, logged in: GET /posts/, GET /users/me, POST /posts/.
    # The check reads the entry GET /users/me reads, which the login cached from its own
    # statement: no statement reads the account again, whatever the number of requests.
    user = await factory.user("mixer")
    await app.state.cache.invalidate(tags=[user_tag(user.id)])  # nothing cached before
    statements.clear()
    login = await client.post("/auth/login", json={"username": "mixer", "password": PASSWORD})
    assert len([s for s in statements if "users.email" in s]) == 1  # the login's own
    statements.clear()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for n in range(3):
        assert (await client.get("/posts/", headers=headers)).status_code == 200
        assert (await client.get("/users/me", headers=headers)).status_code == 200
        created = await client.post(
            "/posts/", json={"title": f"T{n}", "content": "C"}, headers=headers
        )
        assert created.status_code == 201
    assert [s for s in statements if "users.email" in s] == []


# --- one account per username, whatever its case ----------------------------------------


@pytest.mark.parametrize("taken", ["Admin", "ADMIN", "aDmIn"])
async def test_a_username_differing_only_in_case_is_taken(
    client: httpx.AsyncClient, taken: str
) -> None:
    first = await client.post(
        "/auth/register",
        json={"username": "admin", "email": "a@example.com", "password": "pw-123456"},
    )
    assert first.status_code == 201
    native = await client.post(
        "/auth/register",
        json={"username": taken, "email": "b@example.com", "password": "pw-123456"},
    )
    assert native.status_code == 409
    assert native.json()["code"] == "username_taken"
    realworld = await client.post(
        "/api/users",
        json={"user": {"username": taken, "email": "c@example.com", "password": "pw-123456"}},
    )
    assert realworld.status_code == 409
    assert "errors" in realworld.json()


async def test_a_rename_to_another_spelling_of_a_taken_name_is_409_and_of_ones_own_is_fine(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("carol")
    dave = await factory.user("dave")
    taken = await client.patch("/users/me", json={"username": "CAROL"}, headers=dave.headers)
    assert taken.status_code == 409
    own = await client.patch("/users/me", json={"username": "Dave"}, headers=dave.headers)
    assert own.status_code == 200
    assert own.json()["username"] == "Dave"


async def test_the_database_refuses_a_second_spelling_even_past_the_service(
    app: FastAPI, factory: Factory
) -> None:
    erin = await factory.user("erin")
    with pytest.raises(IntegrityError):
        async with database_of(app, erin.id).transaction() as session:
            await session.execute(
                insert(User).values(username="ERIN", email="e2@example.com", password_hash="x")
            )


async def test_login_finds_the_account_whatever_the_case_typed(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("frank")
    response = await client.post("/auth/login", json={"username": "FRANK", "password": PASSWORD})
    assert response.status_code == 200


@pytest.mark.unsharded(
    "migrates one database down and back up; the shards are migrated by `fastpost shards init`, "
    "which tests/shards/test_take_in.py covers"
)
async def test_the_migration_stops_on_names_that_clash_and_builds_the_index_otherwise(
    db: Database,
) -> None:
    await downgrade(db.write_engine, db.settings, "0005")
    async with db.transaction() as session:
        for name in ("Grace", "grace"):
            await session.execute(
                insert(User).values(username=name, email=f"{name}@x.example", password_hash="x")
            )
    with pytest.raises(RuntimeError, match="grace \\(2 accounts\\)"):
        await upgrade(db.write_engine, db.settings)
    async with db.transaction() as session:
        await session.execute(delete(User).where(User.username == "grace"))
    await upgrade(db.write_engine, db.settings)
    query = (
        "SELECT sql FROM sqlite_master WHERE name = 'uq_users_username_lower'"
        if db.dialect == "sqlite"
        else "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_users_username_lower'"
    )
    async with db.reader() as conn:
        definition = await conn.scalar(text(query))
    assert "unique" in definition.lower()
    # PostgreSQL writes it back as lower((username)::text).
    assert re.search(r"lower\(\(?username", definition.lower()), definition


# --- one answer to every failed login -----------------------------------------------------


class CountingPasswords(Passwords):
    """Passwords that count the hashes they check."""

    checks = 0

    def verify_sync(self, password_hash: str | None, password: str) -> Verification:
        self.checks += 1
        return super().verify_sync(password_hash, password)


@pytest.mark.parametrize(
    ("username", "password", "active"),
    [("henry", "wrong password", True), ("nobody", PASSWORD, True), ("henry", PASSWORD, False)],
)
async def test_every_failed_login_gets_the_same_answer_after_checking_one_hash(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    username: str,
    password: str,
    active: bool,
) -> None:
    # Same message, and the same work (one Argon2 check: a decoy hash for an unknown or
    # closed account), so neither the body nor the time tells which it was.
    await factory.user("henry", is_active=active)
    passwords = CountingPasswords(app.state.settings)
    app.state.passwords = passwords
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Incorrect username or password",
        "code": "invalid_credentials",
    }
    assert passwords.checks == 1


async def test_fastpost_admin_deactivate_and_activate_close_and_reopen_an_account(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    upgraded = fastpost("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    db = Database(DatabaseSettings(url=env["FASTPOST_DB__URL"]))
    try:
        async with db.transaction() as session:
            await session.execute(
                insert(User).values(username="ivy", email="ivy@example.com", password_hash="x")
            )

        async def active() -> bool:
            async with db.reader() as conn:
                return bool(
                    await conn.scalar(text("SELECT is_active FROM users WHERE username = 'ivy'"))
                )

        closed = fastpost("admin", "deactivate", "IVY", env=env, cwd=tmp_path)
        assert closed.returncode == 0, closed.stdout + closed.stderr
        assert not await active()
        reopened = fastpost("admin", "activate", "ivy", env=env, cwd=tmp_path)
        assert reopened.returncode == 0, reopened.stdout + reopened.stderr
        assert await active()
        unknown = fastpost("admin", "deactivate", "nobody", env=env, cwd=tmp_path)
        assert unknown.returncode == 1
        assert "no user named" in unknown.stdout
    finally:
        await db.dispose()
