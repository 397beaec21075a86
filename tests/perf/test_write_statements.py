"""How many SQL statements each write sends: fixed, whatever the number of tags.

On PostgreSQL a write's statements are its round trips (BEGIN and COMMIT, where a write
needs a transaction, are not in the log; see fastpost.writes). On SQLite the whole write is
one hop to the writer thread, BEGIN IMMEDIATE and COMMIT included: the write lock is held
for these statements and nothing else.
"""

from __future__ import annotations

import httpx
import pytest

from fastpost.cache_keys import user_tag
from fastpost.db import Database
from tests.conftest import Factory


def _shapes(log: list[str]) -> list[str]:
    """Each statement's first words, enough to tell what it did."""
    return [" ".join(s.split()[:3]).upper() for s in log]


def _backend(db: Database) -> str:
    return "postgres" if db.dialect == "postgresql" else "sqlite"


async def test_creating_a_post_with_three_tags_sends_two_statements_on_postgres_and_one_transaction_of_four_on_sqlite(  # noqa: E501
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author = await factory.user()
    body = {"title": "Hello", "content": "World", "tags": ["b", "a", "c"]}
    statements.clear()
    response = await client.post("/posts/", json=body, headers=author.headers)
    assert response.status_code == 201
    assert (
        _shapes(statements)
        == {
            "postgres": ["INSERT INTO TAGS", "WITH NEW_POST AS"],
            "sqlite": [
                "BEGIN IMMEDIATE",
                "INSERT INTO TAGS",
                "INSERT INTO POSTS",
                "INSERT INTO POST_TAGS",
                "SELECT USERS.USERNAME, USERS.IMAGE,",
                "COMMIT",
            ],
        }[_backend(db)]
    )
    # Twenty tags cost the same statements as three.
    many = {**body, "title": "Many", "tags": [f"t{i}" for i in range(20)]}
    statements.clear()
    response = await client.post("/posts/", json=many, headers=author.headers)
    assert len(statements) == {"postgres": 2, "sqlite": 6}[_backend(db)]
    # What was written is what the API then reads: the response needs no read-back.
    created = response.json()
    assert (await client.get(f"/posts/{created['id']}", headers=author.headers)).json() == {
        **created,
        "liked_by_me": False,
    }


async def test_creating_a_post_without_tags_sends_one_statement_on_postgres(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author = await factory.user()
    statements.clear()
    response = await client.post(
        "/posts/", json={"title": "Hello", "content": "World"}, headers=author.headers
    )
    assert response.status_code == 201
    assert len(statements) == {"postgres": 1, "sqlite": 4}[_backend(db)]


async def test_a_like_sends_three_statements_in_one_transaction(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author, reader = await factory.user(), await factory.user()
    post_id = await factory.post(author)
    statements.clear()
    response = await client.post(f"/posts/{post_id}/like", headers=reader.headers)
    assert response.json() == {"post_id": post_id, "liked": True, "likes_count": 1}
    shapes = _shapes(statements)
    if _backend(db) == "sqlite":
        assert (shapes[0], shapes[-1]) == ("BEGIN IMMEDIATE", "COMMIT")
        shapes = shapes[1:-1]
    assert [s.split()[0] for s in shapes] == ["SELECT", "INSERT", "UPDATE"]


async def test_a_follow_sends_two_statements_in_one_transaction(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    me, them = await factory.user(), await factory.user()
    statements.clear()
    response = await client.post(f"/users/{them.id}/follow", headers=me.headers)
    assert response.json() == {"user_id": them.id, "following": True}
    assert len(statements) == {"postgres": 2, "sqlite": 4}[_backend(db)]


async def test_reading_my_profile_sends_one_statement_then_none_until_i_change_it(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    me = await factory.user()
    # Cold: the factory cached the account as a login does; dropped, the account check
    # and the route share the one statement that loads it.
    await factory.app.state.cache.invalidate(tags=[user_tag(me.id)])
    statements.clear()
    response = await client.get("/users/me", headers=me.headers)
    assert response.status_code == 200
    assert len(statements) == 1
    assert response.headers["cache-control"] == "private, no-store"
    assert list(response.json()) == [
        "id",
        "username",
        "bio",
        "image",
        "created_at",
        "email",
        "updated_at",
    ]
    statements.clear()
    assert (await client.get("/users/me", headers=me.headers)).json() == response.json()
    assert statements == []
    # A profile edit shows at once.
    await client.patch("/users/me", headers=me.headers, json={"bio": "new bio"})
    after = (await client.get("/users/me", headers=me.headers)).json()
    assert after["bio"] == "new bio"
    assert after["updated_at"] != response.json()["updated_at"]
    # Another user's profile is their own entry.
    other = await factory.user()
    assert (await client.get("/users/me", headers=other.headers)).json()["id"] == other.id


@pytest.mark.parametrize("favorite", [True, False])
async def test_a_realworld_favorite_reads_the_article_back_in_its_one_transaction(
    client: httpx.AsyncClient,
    factory: Factory,
    db: Database,
    statements: list[str],
    favorite: bool,
) -> None:
    author, reader = await factory.user(), await factory.user()
    created = await client.post(
        "/api/articles",
        json={"article": {"title": "T", "description": "D", "body": "B", "tagList": ["x"]}},
        headers={"Authorization": author.headers["Authorization"].replace("Bearer", "Token")},
    )
    slug = created.json()["article"]["slug"]
    token = {"Authorization": reader.headers["Authorization"].replace("Bearer", "Token")}
    if not favorite:
        await client.post(f"/api/articles/{slug}/favorite", headers=token)
    statements.clear()
    method = client.post if favorite else client.delete
    response = await method(f"/api/articles/{slug}/favorite", headers=token)
    article = response.json()["article"]
    assert (article["favorited"], article["favoritesCount"]) == (favorite, int(favorite))
    # The like by slug (check, change, count) and the article: four statements (the slug was
    # a lookup of its own before the read model's post_for_viewer_write took it).
    assert len(statements) == {"postgres": 4, "sqlite": 6}[_backend(db)]
