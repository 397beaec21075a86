"""Lists that span shards read the same, in order and in pages, as one database does."""

from __future__ import annotations

from typing import Any

from fastpost.shards.router import Shards
from tests.shards.helpers import Api, same_data, shapes


async def test_the_newest_posts_page_the_same_across_shards_as_on_one_database(
    api: Api, plain_api: Api, shards: Shards
) -> None:
    made = await same_data(api, plain_api)
    # The data does span both databases.
    assert {shards.index_of(user_id) for user_id, _ in made["sharded"]["users"].values()} == {0, 1}
    for limit in (1, 3, 5, 20):
        sharded = await api.all_pages("/posts/", limit=limit)
        plain = await plain_api.all_pages("/posts/", limit=limit)
        assert shapes(sharded) == shapes(plain)
        assert sum(len(page) for page in sharded) == 11  # one draft
    reader = made["sharded"]["users"]["reader"][1]
    plain_reader = made["plain"]["users"]["reader"][1]
    sharded = await api.all_pages("/posts/", headers=reader)
    plain = await plain_api.all_pages("/posts/", headers=plain_reader)
    assert shapes(sharded) == shapes(plain)
    assert sum(item["liked_by_me"] for page in sharded for item in page) == 4


async def test_a_tag_lists_the_same_across_shards(api: Api, plain_api: Api) -> None:
    await same_data(api, plain_api)
    sharded = await api.all_pages("/posts/", limit=2, query={"tag": "even"})
    plain = await plain_api.all_pages("/posts/", limit=2, query={"tag": "even"})
    assert shapes(sharded) == shapes(plain)
    assert [item["title"] for page in sharded for item in page] == [
        "Post 10",
        "Post 8",
        "Post 6",
        "Post 4",
        "Post 2",
        "Post 0",
    ]


async def test_the_feed_pages_the_same_across_shards(api: Api, plain_api: Api) -> None:
    made = await same_data(api, plain_api)
    reader = made["sharded"]["users"]["reader"][1]
    plain_reader = made["plain"]["users"]["reader"][1]
    for limit in (1, 2, 4):
        sharded = await api.all_pages("/feed", headers=reader, limit=limit)
        plain = await plain_api.all_pages("/feed", headers=plain_reader, limit=limit)
        assert shapes(sharded) == shapes(plain)
        authors = {item["author"]["username"] for page in sharded for item in page}
        assert authors == {"ana", "chloe", "eve", "farid"}


async def test_one_authors_posts_list_the_same_across_shards(api: Api, plain_api: Api) -> None:
    made = await same_data(api, plain_api)
    for name in ("ana", "bruno"):
        sharded_id = made["sharded"]["users"][name][0]
        plain_id = made["plain"]["users"][name][0]
        sharded = await api.all_pages("/posts/", limit=1, query={"author_id": sharded_id})
        plain = await plain_api.all_pages("/posts/", limit=1, query={"author_id": plain_id})
        assert shapes(sharded) == shapes(plain)
        by_user = await api.all_pages(f"/users/{sharded_id}/posts", limit=1)
        assert shapes(by_user) == shapes(plain)


async def test_offset_pages_are_refused_in_sharded_mode(api: Api) -> None:
    _, headers = await api.user("offset")
    response = await api.client.get("/posts/", params={"offset": 20})
    assert response.status_code == 422
    assert response.json()["code"] == "offset_unsupported"
    assert (await api.client.get("/feed", params={"offset": 2}, headers=headers)).status_code == 422


async def test_friends_and_the_overview_read_the_same_across_shards(
    api: Api, plain_api: Api
) -> None:
    made = await same_data(api, plain_api)
    shown: dict[str, Any] = {}
    for app_api, key in ((api, "sharded"), (plain_api, "plain")):
        reader_id = made[key]["users"]["reader"][0]
        friends = await app_api.all_pages(f"/users/{reader_id}/friends", limit=1)
        ana_id = made[key]["users"]["ana"][0]
        overview = (await app_api.client.get(f"/users/{ana_id}/overview")).json()
        shown[key] = (
            [[user["username"] for user in page] for page in friends],
            overview["user"]["username"],
            [post["title"] for post in overview["latest_posts"]],
            [user["username"] for user in overview["friends"]],
        )
    assert shown["sharded"] == shown["plain"]
    assert [name for page in shown["sharded"][0] for name in page] == ["eve", "ana"]


async def test_the_most_liked_posts_merge_from_every_shard(api: Api, plain_api: Api) -> None:
    await same_data(api, plain_api)
    sharded = (await api.client.get("/posts/popular", params={"limit": 20})).json()
    plain = (await plain_api.client.get("/posts/popular", params={"limit": 20})).json()
    # Ties in likes_count break by id, which each app numbers its own way: the same posts,
    # each app's in its unsharded order.
    assert sorted((p["title"], p["likes_count"]) for p in sharded) == sorted(
        (p["title"], p["likes_count"]) for p in plain
    )
    keys = [(p["likes_count"], p["id"]) for p in sharded]
    assert keys == sorted(keys, reverse=True)
    assert [p["likes_count"] for p in sharded[:4]] == [1, 1, 1, 1]
    top = (await api.client.get("/posts/popular", params={"limit": 2})).json()
    assert [p["id"] for p in top] == [p["id"] for p in sharded[:2]]


async def test_the_tags_in_use_sum_over_shards(api: Api, plain_api: Api) -> None:
    await same_data(api, plain_api)
    assert (await api.client.get("/tags")).json() == ["even", "odd"]  # 6 and 5 published
    for app_api in (api, plain_api):
        _, headers = await app_api.user("tagger")
        for title in ("T1", "T2"):
            await app_api.post(headers, title, tags=["odd"])
    sharded = (await api.client.get("/tags")).json()
    assert sharded == (await plain_api.client.get("/tags")).json()
    assert sharded == ["odd", "even"]


async def test_comments_read_the_same_across_shards(api: Api, plain_api: Api) -> None:
    made = await same_data(api, plain_api)
    pages: dict[str, Any] = {}
    for app_api, key in ((api, "sharded"), (plain_api, "plain")):
        post_id = made[key]["posts"][0]
        for n, name in enumerate(("bruno", "reader", "farid", "bruno")):
            headers = made[key]["users"][name][1]
            response = await app_api.client.post(
                f"/posts/{post_id}/comments", json={"body": f"Comment {n}"}, headers=headers
            )
            assert response.status_code == 201, response.text
            assert response.json()["author"]["username"] == name
        found = await app_api.all_pages(f"/posts/{post_id}/comments", limit=3)
        pages[key] = [[(c["body"], c["author"]["username"]) for c in page] for page in found]
        mine = found[0][1]["id"]
        reader = made[key]["users"]["reader"][1]
        stranger = made[key]["users"]["ana"][1]
        refused = await app_api.client.delete(f"/posts/{post_id}/comments/{mine}", headers=stranger)
        assert refused.status_code == 403
        deleted = await app_api.client.delete(f"/posts/{post_id}/comments/{mine}", headers=reader)
        assert deleted.status_code == 204
    assert pages["sharded"] == pages["plain"]
    assert pages["sharded"][0][1] == ("Comment 1", "reader")


async def test_search_merges_every_shards_best_matches_and_pages_by_offset(api: Api) -> None:
    users = [await api.user(f"writer{n}") for n in range(6)]
    for n, (_, headers) in enumerate(users):
        # More mentions, a better rank: "zebra" once in the first post, six times in the last.
        await api.post(headers, f"Zebra {n}", content=" ".join(["zebra"] * (n + 1)))
        await api.post(headers, f"Okapi {n}", content="stripes elsewhere")
    found = (await api.client.get("/posts/search", params={"q": "zebra", "limit": 20})).json()
    assert [post["title"] for post in found] == [f"Zebra {n}" for n in range(5, -1, -1)]
    pages = []
    for offset in range(0, 6, 2):
        response = await api.client.get(
            "/posts/search", params={"q": "zebra", "limit": 2, "offset": offset}
        )
        pages.extend(post["title"] for post in response.json())
    assert pages == [post["title"] for post in found]
