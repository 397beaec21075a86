"""One database down: requests about users of the others still succeed; those that need it
are answered 503 with Retry-After."""

from __future__ import annotations

from fastpost.db import Database
from fastpost.shards.router import Shards
from tests.shards.helpers import Api


async def test_a_stopped_database_fails_only_the_requests_that_need_it(
    api: Api, shards: Shards
) -> None:
    found: dict[int, tuple[int, dict[str, str], int]] = {}
    n = 0
    while len(found) < 2:
        n += 1
        user_id, headers = await api.user(f"resilient{n}")
        if shards.index_of(user_id) not in found:
            post_id = await api.post(headers, f"Post of {n}")
            found[shards.index_of(user_id)] = (user_id, headers, post_id)
    # Database 1 (not the directory) stops answering: nothing listens on port 1.
    running = shards.databases[1]
    stopped = Database(
        running.settings.model_copy(
            update={"url": "postgresql+asyncpg://postgres@127.0.0.1:1/gone", "connect_timeout": 1}
        )
    )
    shards.databases[1] = stopped
    try:
        alive_user, alive_headers, alive_post = found[0]
        down_user, _, down_post = found[1]
        for path in (f"/users/{alive_user}", f"/posts/{alive_post}"):
            assert (await api.client.get(path)).status_code == 200, path
        written = await api.client.post(
            "/posts/", json={"title": "Still writing", "content": "yes"}, headers=alive_headers
        )
        assert written.status_code == 201
        for path in (f"/users/{down_user}/followers", f"/users/{down_user}/posts?limit=7"):
            response = await api.client.get(path)
            assert response.status_code == 503, path
            assert "retry-after" in response.headers
        # Lists across every database need this one too.
        newest = await api.client.get("/posts/", params={"limit": 7})
        assert newest.status_code == 503
        assert "retry-after" in newest.headers
        liked = await api.client.post(f"/posts/{down_post}/like", headers=alive_headers)
        assert liked.status_code == 503
        # The instance stays ready (the directory answers), and says which database does not.
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200
        listed = ready.json()["shards"]
        assert [each["up"] for each in listed] == [True, False]
        assert listed[1]["database"] == "127.0.0.1:1/gone"
        assert listed[1]["reason"]
    finally:
        shards.databases[1] = running
        await stopped.dispose()
    assert (await api.client.get("/posts/", params={"limit": 7})).status_code == 200
    assert [each["up"] for each in (await api.client.get("/health/ready")).json()["shards"]] == [
        True,
        True,
    ]
