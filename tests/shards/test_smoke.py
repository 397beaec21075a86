from __future__ import annotations

from tests.shards.conftest import Api


async def test_a_user_registers_logs_in_and_posts_in_sharded_mode(api: Api) -> None:
    user_id, headers = await api.user("smoke")
    post_id = await api.post(headers, "Hello")
    me = await api.client.get("/users/me", headers=headers)
    assert me.json()["id"] == user_id
    post = await api.client.get(f"/posts/{post_id}")
    assert post.status_code == 200, post.text
    assert post.json()["author"]["id"] == user_id
    assert post_id >> 48 == user_id >> 48
