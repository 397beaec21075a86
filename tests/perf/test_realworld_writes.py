"""How many SQL statements each RealWorld write sends, as tests/perf/test_write_statements.py
counts the native writes: the post (or user) is looked up once, by slug or username, in the
statement that also checks who may write, and the answer is read back at most once, in the
API's shape, in the write's own transaction.

On PostgreSQL a write's statements are its round trips (BEGIN and COMMIT of a write program
are not in the log; see fastpost.writes). On SQLite a write program is one hop to the writer
thread, BEGIN IMMEDIATE and COMMIT included. The README's table ("Statements per RealWorld
write") lists the same counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from fastpost.db import Database
from tests.conftest import Factory, TestUser


def _headers(user: TestUser) -> dict[str, str]:
    return {"Authorization": user.headers["Authorization"].replace("Bearer", "Token")}


async def _logged_in(client: httpx.AsyncClient, *users: TestUser) -> None:
    """Each user as a client is after logging in: their first request done. Only the write's
    own statements are counted, not what a first request of a token may cost."""
    for user in users:
        assert (await client.get("/api/user", headers=_headers(user))).status_code == 200


def _verbs(log: list[str]) -> list[str]:
    """Each statement's first word (BEGIN IMMEDIATE, SELECT, INSERT, UPDATE, DELETE, ...)."""
    return [s.split()[0].upper() for s in log]


def _expected(db: Database, postgres: list[str], sqlite: list[str] | None = None) -> list[str]:
    """The statements of a write program: on SQLite between BEGIN IMMEDIATE and COMMIT."""
    if db.dialect == "postgresql":
        return postgres
    return ["BEGIN", *(postgres if sqlite is None else sqlite), "COMMIT"]


async def _article(client: httpx.AsyncClient, author: TestUser, **fields: Any) -> str:
    body = {"title": "T", "description": "D", "body": "B", **fields}
    response = await client.post("/api/articles", json={"article": body}, headers=_headers(author))
    assert response.status_code == 201, response.text
    slug: str = response.json()["article"]["slug"]
    return slug


async def _count(
    statements: list[str], send: Callable[[], Awaitable[httpx.Response]], status: int
) -> list[str]:
    statements.clear()
    response = await send()
    assert response.status_code == status, response.text
    return _verbs(statements)


@pytest.mark.parametrize("tags", [[], ["b", "a", "c"]])
async def test_creating_an_article_sends_the_native_create_and_no_read_back(
    client: httpx.AsyncClient,
    factory: Factory,
    db: Database,
    statements: list[str],
    tags: list[str],
) -> None:
    author = await factory.user()
    await _logged_in(client, author)
    body = {"article": {"title": "T", "description": "D", "body": "B", "tagList": tags}}

    async def send() -> httpx.Response:
        return await client.post("/api/articles", json=body, headers=_headers(author))

    sent = await _count(statements, send, 201)
    if db.dialect == "postgresql":
        # The tags on their own (see posts.writes.create_post), then the post, its tags and
        # its author in one statement.
        assert sent == (["INSERT", "WITH"] if tags else ["WITH"])
    else:
        tagging = ["INSERT", "INSERT", "INSERT"] if tags else ["INSERT"]
        assert sent == ["BEGIN", *tagging, "SELECT", "COMMIT"]


async def test_updating_an_article_looks_it_up_once_by_slug_and_reads_it_back_once(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author = await factory.user()
    slug = await _article(client, author, tagList=["a"])
    url = f"/api/articles/{slug}"

    async def put(article: dict[str, Any]) -> Callable[[], Awaitable[httpx.Response]]:
        async def send() -> httpx.Response:
            return await client.put(url, json={"article": article}, headers=_headers(author))

        return send

    # The post for write (locked, by slug), the UPDATE, the article read back.
    sent = await _count(statements, await put({"title": "New"}), 200)
    assert sent == _expected(db, ["SELECT", "UPDATE", "SELECT"])
    # New tags: three statements more, whatever their number.
    sent = await _count(statements, await put({"tagList": ["x", "y", "z"]}), 200)
    assert sent == _expected(db, ["SELECT", "UPDATE", "INSERT", "DELETE", "INSERT", "SELECT"])
    # Nothing to change: the checks and the article.
    sent = await _count(statements, await put({}), 200)
    assert sent == _expected(db, ["SELECT", "SELECT"])


async def test_deleting_an_article_is_one_lookup_and_one_delete(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author = await factory.user()
    slug = await _article(client, author, tagList=["a"])

    async def send() -> httpx.Response:
        return await client.delete(f"/api/articles/{slug}", headers=_headers(author))

    assert await _count(statements, send, 204) == _expected(db, ["SELECT", "DELETE"])


@pytest.mark.parametrize("favorite", [True, False])
async def test_a_favorite_is_the_native_like_by_slug_and_one_read_back(
    client: httpx.AsyncClient,
    factory: Factory,
    db: Database,
    statements: list[str],
    favorite: bool,
) -> None:
    author, reader = await factory.user(), await factory.user()
    await _logged_in(client, author, reader)
    slug = await _article(client, author, tagList=["x"])
    url = f"/api/articles/{slug}/favorite"
    if not favorite:
        await client.post(url, headers=_headers(reader))

    async def send() -> httpx.Response:
        method = client.post if favorite else client.delete
        return await method(url, headers=_headers(reader))

    # Who may like (the post by slug, visible, and the account), the change, the count, and
    # the article read back.
    change = "INSERT" if favorite else "DELETE"
    sent = await _count(statements, send, 200)
    assert sent == _expected(db, ["SELECT", change, "UPDATE", "SELECT"])
    article = (await send()).json()["article"]
    assert (article["favorited"], article["favoritesCount"]) == (favorite, int(favorite))
    # Again: nothing changes, and the count is read instead of updated.
    sent = await _count(statements, send, 200)
    assert sent == _expected(db, ["SELECT", change, "SELECT", "SELECT"])


@pytest.mark.parametrize("follow", [True, False])
async def test_a_follow_by_username_is_two_statements_with_no_read_back(
    client: httpx.AsyncClient,
    factory: Factory,
    db: Database,
    statements: list[str],
    follow: bool,
) -> None:
    me, them = await factory.user(), await factory.user()
    await _logged_in(client, me, them)
    url = f"/api/profiles/{them.username}/follow"
    if not follow:
        await client.post(url, headers=_headers(me))

    async def send() -> httpx.Response:
        method = client.post if follow else client.delete
        return await method(url, headers=_headers(me))

    # The profile by username with the caller's account check, then the change; the answer
    # is built from that profile and what was written.
    sent = await _count(statements, send, 200)
    assert sent == _expected(db, ["SELECT", "INSERT" if follow else "DELETE"])
    profile = (await send()).json()["profile"]
    assert (profile["username"], profile["following"]) == (them.username, follow)


async def test_a_comment_is_one_lookup_and_one_write_with_no_read_back(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author, reader = await factory.user(), await factory.user()
    await _logged_in(client, author, reader)
    slug = await _article(client, author)
    url = f"/api/articles/{slug}/comments"

    async def add() -> httpx.Response:
        return await client.post(url, json={"comment": {"body": "hi"}}, headers=_headers(reader))

    # The article by slug with the caller's own profile (none: the account is gone), then
    # the INSERT; the answer is what was written. On PostgreSQL each in autocommit: two
    # round trips, where the ORM's session took five (BEGIN, three statements, COMMIT).
    assert await _count(statements, add, 201) == _expected(db, ["SELECT", "INSERT"])
    comment = (await add()).json()["comment"]
    listed = (await client.get(url, headers=_headers(reader))).json()["comments"]
    assert listed[-1] == comment

    async def delete() -> httpx.Response:
        return await client.delete(f"{url}/{comment['id']}", headers=_headers(reader))

    # The article by slug, the comment's author and the account in one row, the DELETE.
    assert await _count(statements, delete, 204) == _expected(db, ["SELECT", "DELETE"])


async def test_each_realworld_read_is_one_statement_for_any_page_size(
    client: httpx.AsyncClient, factory: Factory, statements: list[str]
) -> None:
    """The reads beside the writes, for comparison: one statement each (a comment list two:
    the article by slug, then its comments), whatever the page size or filter."""
    author, reader = await factory.user(), await factory.user()
    await _logged_in(client, author, reader)
    for i in range(5):
        slug = await _article(client, author, tagList=["t"], title=f"T{i}")
        await client.post(f"/api/articles/{slug}/favorite", headers=_headers(reader))
        await client.post(
            f"/api/articles/{slug}/comments",
            json={"comment": {"body": "hi"}},
            headers=_headers(reader),
        )
    await client.post(f"/api/profiles/{author.username}/follow", headers=_headers(reader))
    # (path, statements, paged: the same at every page size, logged in: a caller's flags)
    pages = ("limit=1", "limit=20")
    lists = [
        "/api/articles?offset=1",
        f"/api/articles?tag=t&author={author.username}",
        f"/api/articles?favorited={reader.username}&offset=1",
    ]
    reads: list[tuple[str, int, dict[str, str]]] = []
    for path in lists:
        for page in pages:
            for headers in ({}, _headers(reader)):
                reads.append((f"{path}&{page}", 1, headers))
    for page in pages:
        reads.append((f"/api/articles/feed?{page}", 1, _headers(reader)))
        reads.append((f"/api/articles/feed?offset=1&{page}", 1, _headers(reader)))
    for headers in ({}, _headers(reader)):
        reads.append((f"/api/profiles/{author.username}", 1, headers))
        reads.append((f"/api/articles/{slug}/comments", 2, headers))
    for url, expected, headers in reads:
        statements.clear()
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
        assert len(statements) == expected, (url, statements)


async def test_a_native_comment_is_the_same_two_statements_by_id(
    client: httpx.AsyncClient, factory: Factory, db: Database, statements: list[str]
) -> None:
    author, reader = await factory.user(), await factory.user()
    await _logged_in(client, author, reader)
    post_id = await factory.post(author)
    url = f"/posts/{post_id}/comments"

    async def add() -> httpx.Response:
        return await client.post(url, json={"body": "hi"}, headers=reader.headers)

    assert await _count(statements, add, 201) == _expected(db, ["SELECT", "INSERT"])
    comment = (await add()).json()
    page = (await client.get(url, headers=reader.headers)).json()
    assert page["items"][-1] == comment

    async def delete() -> httpx.Response:
        return await client.delete(f"{url}/{comment['id']}", headers=reader.headers)

    assert await _count(statements, delete, 204) == _expected(db, ["SELECT", "DELETE"])
