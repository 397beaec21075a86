"""A request about one user or one post touches one database: the one its id names."""

from __future__ import annotations

from fastpost.shards.router import Shards
from tests.shards.helpers import Api, Touches


async def _one_user_on_each(api: Api, shards: Shards) -> list[tuple[int, dict[str, str]]]:
    """Register users until one lives on each database; return them, by database."""
    found: dict[int, tuple[int, dict[str, str]]] = {}
    n = 0
    while len(found) < len(shards.databases):
        n += 1
        user_id, headers = await api.user(f"routed{n}")
        found.setdefault(shards.index_of(user_id), (user_id, headers))
    return [found[index] for index in range(len(shards.databases))]


async def test_requests_about_one_user_or_post_touch_only_its_database(
    api: Api, shards: Shards, touches: Touches
) -> None:
    (first, first_headers), (second, second_headers) = await _one_user_on_each(api, shards)
    first_db, second_db = shards.index_of(first), shards.index_of(second)

    async def touched(method: str, path: str, **kwargs: object) -> list[int]:
        touches.reset()
        response = await api.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code < 300, response.text
        return touches.touched()

    # The second user writes a post: on their database, numbered from their logical shard.
    touches.reset()
    post_id = await api.post(second_headers, "Routed", tags=["x"])
    assert touches.touched() == [second_db]
    assert post_id >> 48 == second >> 48

    assert await touched("GET", f"/users/{first}") == [first_db]
    assert await touched("GET", f"/users/{second}") == [second_db]
    assert await touched("GET", f"/posts/{post_id}") == [second_db]
    # Another user's like and read: the post's database only (their account is cached by
    # their login, as the unsharded account check is).
    assert await touched("POST", f"/posts/{post_id}/like", headers=first_headers) == [second_db]
    assert await touched("GET", f"/posts/{post_id}", headers=first_headers) == [second_db]
    assert await touched("DELETE", f"/posts/{post_id}/like", headers=first_headers) == [second_db]
    assert await touched(
        "PATCH", f"/posts/{post_id}", json={"title": "Routed again"}, headers=second_headers
    ) == [second_db]
    assert await touched("GET", "/posts/", params={"author_id": second, "limit": 5}) == [second_db]
    assert await touched("GET", f"/users/{second}/posts", params={"cursor": None}) == [second_db]
    assert await touched("GET", f"/users/{second}/followers") == [second_db]
    assert await touched(
        "POST", f"/posts/{post_id}/comments", json={"body": "Hi"}, headers=first_headers
    ) == [second_db]
    # A list of people names them from their own databases: the comments from the post's,
    # their authors' names (here the first user's) from theirs.
    assert await touched("GET", f"/posts/{post_id}/comments") == sorted({first_db, second_db})
    assert await touched("DELETE", f"/posts/{post_id}", headers=second_headers) == [second_db]


async def test_login_reads_the_directory_then_the_users_database(
    api: Api, shards: Shards, touches: Touches
) -> None:
    users = await _one_user_on_each(api, shards)
    user_id, _ = users[1]
    username = (await api.client.get(f"/users/{user_id}")).json()["username"]
    touches.reset()
    response = await api.client.post(
        "/auth/login", json={"username": username.upper(), "password": "correct horse battery"}
    )
    assert response.status_code == 200, response.text
    # The directory (database 0), then the user's own (database 1).
    assert touches.counts == [1, 1]


async def test_the_newest_list_and_the_feed_cost_one_statement_per_database(
    api: Api, shards: Shards, touches: Touches
) -> None:
    (first, first_headers), (second, second_headers) = await _one_user_on_each(api, shards)
    for n in range(4):
        await api.post(first_headers if n % 2 else second_headers, f"P{n}")
    await api.follow(first_headers, second)
    reader_id, reader = await api.user("reader")
    await api.follow(reader, first)
    await api.follow(reader, second)
    for path, headers in (("/posts/", None), ("/posts/", reader), ("/feed", reader)):
        cursor = None
        for _ in range(2):
            touches.reset()
            params = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
            response = await api.client.get(path, params=params, headers=headers)
            assert response.status_code == 200, response.text
            cursor = response.json()["next_cursor"]
            expected = [1, 1]
            if path == "/feed":
                # The reader's followees first, on the reader's database.
                expected[shards.index_of(reader_id)] += 1
            assert touches.counts == expected, (path, touches.counts)
