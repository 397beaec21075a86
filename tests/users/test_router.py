"""The /auth and /users routes."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PASSWORD, Factory


async def register(client: httpx.AsyncClient, **overrides: str) -> httpx.Response:
    body = {"username": "alice", "email": "alice@example.com", "password": "s3cret-pass"}
    body.update(overrides)
    return await client.post("/auth/register", json=body)


async def test_register_creates_account_and_returns_it_without_secrets(
    client: httpx.AsyncClient,
) -> None:
    response = await register(client, email="Alice@Example.com")
    assert response.status_code == 201
    user = response.json()
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"  # normalised
    assert "password" not in user
    assert "password_hash" not in user
    assert user["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("field", "value"),
    [("username", "alice"), ("email", "ALICE@example.com")],
)
async def test_register_refuses_taken_username_or_email_with_409(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    assert (await register(client)).status_code == 201
    other = {"username": "bob", "email": "bob@example.com", field: value}
    response = await register(client, **other)
    assert response.status_code == 409
    assert response.json()["code"] in {"username_taken", "email_taken"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "al", "email": "a@example.com", "password": "longenough"}, "username"),
        ({"username": "alice", "email": "not-an-email", "password": "longenough"}, "email"),
        ({"username": "alice", "email": "a@example.com", "password": "short"}, "password"),
        ({"username": "ali ce", "email": "a@example.com", "password": "longenough"}, "username"),
        (
            {"username": "alice", "email": "a@example.com", "password": "longenough", "x": 1},
            "x",
        ),
    ],
)
async def test_register_rejects_bad_input_with_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["code"] == "validation_error"
    assert field in {e["field"] for e in payload["errors"]}


async def test_login_with_json_returns_a_bearer_token(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("carol")
    response = await client.post("/auth/login", json={"username": "carol", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 3600
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "carol"


async def test_login_accepts_the_oauth2_password_form_used_by_the_docs(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("dave")
    response = await client.post("/auth/login", data={"username": "dave", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["access_token"]


@pytest.mark.parametrize(
    ("username", "password"), [("erin", "wrong password"), ("nobody", PASSWORD)]
)
async def test_login_fails_the_same_way_for_wrong_password_and_unknown_user(
    client: httpx.AsyncClient, factory: Factory, username: str, password: str
) -> None:
    await factory.user("erin")
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Incorrect username or password",
        "code": "invalid_credentials",
    }
    assert response.headers["www-authenticate"] == "Bearer"


async def test_login_rejects_a_malformed_body_with_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    response = await client.post("/auth/login", json={"username": "x"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz"],
)
async def test_me_requires_a_valid_bearer_token(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] in {"not_authenticated", "invalid_token"}


async def test_an_expired_token_is_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    tokens = client._transport.app.state.tokens  # type: ignore[attr-defined]
    # Expired for longer than the clock skew tolerated (AuthSettings.leeway_seconds).
    expired = tokens.issue(user.id, lifetime=-120).access_token
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


async def test_a_token_signed_with_another_key_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    import jwt

    user = await factory.user()
    forged = jwt.encode({"sub": str(user.id), "exp": 2**40}, "another-key" * 4, "HS256")
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


async def test_update_me_changes_profile_fields(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user("frank")
    response = await client.patch(
        "/users/me",
        headers=user.headers,
        json={"bio": "Writes about latency", "image": "https://example.com/f.png"},
    )
    assert response.status_code == 200
    assert response.json()["bio"] == "Writes about latency"
    profile = (await client.get(f"/users/{user.id}")).json()
    assert profile["image"] == "https://example.com/f.png"
    assert "email" not in profile  # the public profile never shows the address


async def test_update_me_changes_the_password_used_to_log_in(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user("gina")
    response = await client.patch(
        "/users/me", headers=user.headers, json={"password": "a brand new password"}
    )
    assert response.status_code == 200
    old = await client.post("/auth/login", json={"username": "gina", "password": PASSWORD})
    new = await client.post(
        "/auth/login", json={"username": "gina", "password": "a brand new password"}
    )
    assert (old.status_code, new.status_code) == (401, 200)


async def test_update_me_refuses_a_username_someone_else_has(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user("hank")
    user = await factory.user("ivy")
    response = await client.patch("/users/me", headers=user.headers, json={"username": "hank"})
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    # Nothing half-written: the profile is unchanged.
    assert (await client.get(f"/users/{user.id}")).json()["username"] == "ivy"


@pytest.mark.parametrize(
    "body", [{}, {"username": None}, {"email": "nope"}, {"image": "javascript:alert(1)"}]
)
async def test_update_me_rejects_empty_or_invalid_changes(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, object]
) -> None:
    user = await factory.user()
    response = await client.patch("/users/me", headers=user.headers, json=body)
    assert response.status_code == 422


async def test_unknown_user_is_404_and_a_bad_id_is_422(client: httpx.AsyncClient) -> None:
    missing = await client.get("/users/999999")
    assert missing.status_code == 404
    assert missing.json()["code"] == "user_not_found"
    assert (await client.get("/users/abc")).status_code == 422
    assert (await client.get("/users/0")).status_code == 422
    assert (await client.get(f"/users/{2**63}")).status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/login", {"username": "nul\x00user", "password": "whatever"}),
        (
            "/auth/register",
            {"username": "bob", "email": "b@example.com", "password": "pass\x00word"},
        ),
    ],
)
async def test_text_with_a_nul_character_is_a_422_on_every_backend(
    client: httpx.AsyncClient, path: str, body: dict[str, str]
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422
    assert "NUL" in response.json()["errors"][0]["message"]


async def test_a_bio_with_a_nul_character_is_refused_and_nothing_changes(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    response = await client.patch("/users/me", headers=user.headers, json={"bio": "a\x00b"})
    assert response.status_code == 422
    assert (await client.get("/users/me", headers=user.headers)).json()["bio"] is None
