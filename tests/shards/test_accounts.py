"""Usernames and emails are unique across every database, through the directory."""

from __future__ import annotations

from datetime import timedelta

from fastpost.settings import Settings
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import logical_shard_for_username
from fastpost.timeutil import utcnow
from tests.shards.helpers import PASSWORD, Api, execute


def _names_on_both_databases(shards: Shards) -> tuple[str, str]:
    """Two names whose users land on different databases."""
    first = "taken"
    home = shards.map.databases[logical_shard_for_username(first)]
    n = 0
    while True:
        n += 1
        other = f"other{n}"
        if shards.map.databases[logical_shard_for_username(other)] != home:
            return first, other


async def test_a_taken_username_is_refused_whatever_its_case(api: Api) -> None:
    await api.user("Taken")
    response = await api.client.post(
        "/auth/register",
        json={"username": "tAKEN", "email": "someone@example.com", "password": PASSWORD},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"


async def test_a_taken_email_is_refused_across_databases(api: Api, shards: Shards) -> None:
    first, other = _names_on_both_databases(shards)
    await api.user(first)
    response = await api.client.post(
        "/auth/register",
        json={"username": other, "email": f"{first}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"


async def test_a_directory_row_left_by_a_failed_registration_is_taken_over(
    api: Api, sharded_settings: Settings
) -> None:
    # A registration that claimed its name, then failed before writing its user row.
    await execute(
        sharded_settings.db.shards[0],
        "INSERT INTO user_directory (username_lower, email, user_id, created_at) "
        "VALUES ('ghost', 'ghost@example.com', 42, :at)",
        {"at": utcnow() - timedelta(hours=1)},
    )
    user_id, _ = await api.user("ghost")
    assert user_id != 42
    rows = await execute(
        sharded_settings.db.shards[0],
        "SELECT user_id FROM user_directory WHERE username_lower = 'ghost'",
    )
    assert rows == [(user_id,)]


async def test_a_recent_claim_is_not_taken_over(api: Api, sharded_settings: Settings) -> None:
    # Perhaps a registration still between its steps: a retry later may take it over.
    await execute(
        sharded_settings.db.shards[0],
        "INSERT INTO user_directory (username_lower, email, user_id) "
        "VALUES ('busy', 'busy@example.com', 42)",
    )
    response = await api.client.post(
        "/auth/register",
        json={"username": "busy", "email": "busy2@example.com", "password": PASSWORD},
    )
    assert response.status_code == 409


async def test_login_with_an_unknown_name_or_a_wrong_password_is_refused(api: Api) -> None:
    await api.user("known")
    for username, password in (("unknown", PASSWORD), ("known", "wrong password here")):
        response = await api.client.post(
            "/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"


async def test_a_new_username_moves_in_the_directory_and_logs_in(
    api: Api, shards: Shards, sharded_settings: Settings
) -> None:
    first, other = _names_on_both_databases(shards)
    _, headers = await api.user(first)
    await api.user(other)
    response = await api.client.patch("/users/me", json={"username": other}, headers=headers)
    assert response.status_code == 409
    response = await api.client.patch(
        "/users/me", json={"username": "Renamed", "bio": "new"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "Renamed"
    rows = await execute(
        sharded_settings.db.shards[0], "SELECT username_lower FROM user_directory ORDER BY 1"
    )
    assert sorted(rows) == sorted([("renamed",), (other,)])
    login = await api.client.post("/auth/login", json={"username": "renamed", "password": PASSWORD})
    assert login.status_code == 200
    old = await api.client.post("/auth/login", json={"username": first, "password": PASSWORD})
    assert old.status_code == 401
    # The old name is free again.
    again = await api.client.post(
        "/auth/register",
        json={"username": first.upper(), "email": "new@example.com", "password": PASSWORD},
    )
    assert again.status_code == 201, again.text


async def test_a_name_whose_directory_row_was_lost_is_refused_and_leaves_no_claim(
    api: Api, sharded_settings: Settings
) -> None:
    await api.user("lost")
    directory = sharded_settings.db.shards[0]
    await execute(directory, "DELETE FROM user_directory WHERE username_lower = 'lost'")
    # The same name hashes to the same database, whose unique index still has it.
    response = await api.client.post(
        "/auth/register",
        json={"username": "Lost", "email": "other@example.com", "password": PASSWORD},
    )
    assert response.status_code == 409
    assert (
        await execute(directory, "SELECT * FROM user_directory WHERE username_lower = 'lost'") == []
    )
