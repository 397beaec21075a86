"""The RealWorld API in sharded mode answers as it does on one database, on the same data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastpost.posts.slugs import logical_shard_of_slug, make_sharded_slug
from fastpost.shards.router import Shards
from tests.helpers import environment, fastpost
from tests.shards.helpers import NAMES, PASSWORD, execute

Headers = dict[str, str]
ROOT = Path(__file__).resolve().parents[2]
POSTMAN_SCRIPT = ROOT / "scripts" / "realworld-postman.sh"
SUITE_DIR = Path(os.environ.get("FASTPOST_REALWORLD_DIR", ROOT.parent / "shared" / "realworld"))
NEWMAN_HOME = Path(
    os.environ.get(
        "NEWMAN_HOME",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastpost" / "newman",
    )
)


class RealWorld:
    """Users, articles and their relations made through one app's RealWorld API."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.tokens: dict[str, Headers] = {}
        self.slugs: list[str] = []

    async def user(self, name: str) -> Headers:
        body = {"user": {"username": name, "email": f"{name}@example.com", "password": PASSWORD}}
        registered = await self.client.post("/api/users", json=body)
        assert registered.status_code == 201, registered.text
        self.tokens[name] = {"Authorization": f"Token {registered.json()['user']['token']}"}
        return self.tokens[name]

    async def article(self, author: str, title: str, tags: list[str]) -> str:
        body = {"article": {"title": title, "description": "d", "body": "b", "tagList": tags}}
        created = await self.client.post("/api/articles", json=body, headers=self.tokens[author])
        assert created.status_code == 201, created.text
        slug: str = created.json()["article"]["slug"]
        self.slugs.append(slug)
        return slug

    async def call(
        self, method: str, path: str, as_user: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = self.tokens[as_user] if as_user else None
        response = await self.client.request(method, path, headers=headers, **kwargs)
        return response.status_code, (response.json() if response.content else None)


async def _fill(rw: RealWorld) -> None:
    """The same users, articles, favorites, follows and comments, in the same order."""
    for name in [*NAMES, "reader"]:
        await rw.user(name)
    for n in range(12):
        await rw.article(
            NAMES[(n * 5) % len(NAMES)], f"Post {n}", ["even" if n % 2 == 0 else "odd"]
        )
    for n in (0, 3, 4, 9):
        assert (await rw.call("POST", f"/api/articles/{rw.slugs[n]}/favorite", "reader"))[0] == 200
    assert (await rw.call("POST", f"/api/articles/{rw.slugs[4]}/favorite", "ana"))[0] == 200
    for name in ("ana", "chloe", "eve", "farid"):
        assert (await rw.call("POST", f"/api/profiles/{name}/follow", "reader"))[0] == 200
    for author in ("ana", "bruno", "reader"):
        comment = {"comment": {"body": f"from {author}"}}
        status, _ = await rw.call(
            "POST", f"/api/articles/{rw.slugs[0]}/comments", author, json=comment
        )
        assert status == 201


def _without_made(value: Any) -> Any:
    """A response without what each app makes its own way: slugs, ids and timestamps."""
    if isinstance(value, list | tuple):
        return [_without_made(item) for item in value]
    if isinstance(value, dict):
        return {
            key: _without_made(item)
            for key, item in value.items()
            if key not in {"slug", "id", "createdAt", "updatedAt", "token"}
        }
    return value


def _count_reads(shards: Shards) -> list[int]:
    """Statements read through each database from now on (a list counted in place). Not
    tests.shards.helpers.Touches: the shard map's watch reads the directory now and then."""
    counts = [0] * len(shards.databases)
    for index, db in enumerate(shards.databases):
        db.fetch_all = _counted(counts, index, db.fetch_all)  # type: ignore[method-assign]
    return counts


def _counted(counts: list[int], index: int, method: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[index] += 1
        return method(*args, **kwargs)

    return counted


@pytest.fixture
async def both(client: httpx.AsyncClient, plain_client: httpx.AsyncClient) -> list[RealWorld]:
    apps = [RealWorld(client), RealWorld(plain_client)]
    for rw in apps:
        await _fill(rw)
    return apps


async def _same(
    both: list[RealWorld], method: str, path: str, as_user: str | None = None, **kw: Any
) -> Any:
    sharded, plain = both
    got = await sharded.call(method, path, as_user, **kw)
    expected = await plain.call(method, path, as_user, **kw)
    assert _without_made(got) == _without_made(expected), path
    return got[1]


async def test_the_articles_are_spread_over_both_databases(
    both: list[RealWorld], shards: Shards
) -> None:
    sharded, _ = both
    indexes = set()
    for slug in sharded.slugs:
        logical = logical_shard_of_slug(slug)
        assert logical is not None
        indexes.add(shards.map.databases[logical])
    assert indexes == {0, 1}


async def test_article_pages_with_offsets_and_counts_read_as_on_one_database(
    both: list[RealWorld],
) -> None:
    for as_user in (None, "reader"):
        for limit in (1, 3, 5, 20):
            for offset in range(0, 13, 2):
                page = await _same(
                    both, "GET", f"/api/articles?limit={limit}&offset={offset}", as_user
                )
                assert page["articlesCount"] == 12
    page = await _same(both, "GET", "/api/articles?limit=20", "reader")
    assert [a["title"] for a in page["articles"]][:2] == ["Post 11", "Post 10"]
    assert sum(a["favorited"] for a in page["articles"]) == 4
    assert sum(a["author"]["following"] for a in page["articles"]) > 0
    assert (await _same(both, "GET", "/api/articles?offset=50"))["articlesCount"] == 12


@pytest.mark.parametrize(
    "query",
    [
        "tag=even",
        "tag=odd&limit=2&offset=3",
        "author=ana",
        "author=bruno&offset=1&limit=1",
        "favorited=reader",
        "favorited=reader&offset=2&limit=1",
        "favorited=ana",
        "tag=even&favorited=reader",
        "author=ana&tag=even",
        "author=nobody",
        "favorited=nobody",
        "tag=none",
    ],
)
async def test_filtered_lists_read_as_on_one_database(both: list[RealWorld], query: str) -> None:
    for as_user in (None, "reader"):
        await _same(both, "GET", f"/api/articles?{query}", as_user)


async def test_the_feed_pages_with_offsets_as_on_one_database(both: list[RealWorld]) -> None:
    for limit in (1, 2, 4):
        for offset in range(0, 10, 3):
            page = await _same(
                both, "GET", f"/api/articles/feed?limit={limit}&offset={offset}", "reader"
            )
            assert page["articlesCount"] == 8
    assert (await _same(both, "GET", "/api/articles/feed", "ana"))["articlesCount"] == 0


async def test_an_article_by_slug_is_one_read_on_the_database_its_slug_names(
    both: list[RealWorld], shards: Shards
) -> None:
    sharded, plain = both
    reads = _count_reads(shards)
    for n in (0, 1, 4):
        logical = logical_shard_of_slug(sharded.slugs[n])
        assert logical is not None
        reads[:] = [0] * len(reads)
        status, got = await sharded.call("GET", f"/api/articles/{sharded.slugs[n]}")
        expected_reads = [0] * len(reads)
        expected_reads[shards.map.databases[logical]] = 1
        assert reads == expected_reads
        expected = await plain.call("GET", f"/api/articles/{plain.slugs[n]}")
        assert _without_made((status, got)) == _without_made(expected)
        for as_user in ("reader", "ana"):
            got_as = await sharded.call("GET", f"/api/articles/{sharded.slugs[n]}", as_user)
            expected_as = await plain.call("GET", f"/api/articles/{plain.slugs[n]}", as_user)
            assert _without_made(got_as) == _without_made(expected_as)


async def test_a_slug_that_names_no_shard_is_a_realworld_404(both: list[RealWorld]) -> None:
    sharded, _ = both
    for slug in ("no-suffix", "post-zzzzzzzz", sharded.slugs[0][:-1] + "-"):
        status, body = await sharded.call("GET", f"/api/articles/{slug}")
        assert status == 404
        assert body == {"errors": {"article": ["not found"]}}


async def test_article_writes_answer_as_on_one_database(both: list[RealWorld]) -> None:
    sharded, plain = both
    # Cached first: the writes below must drop the home page and the tags, as unsharded.
    await _same(both, "GET", "/api/articles?limit=20")
    await _same(both, "GET", "/api/tags")
    assert (await sharded.call("GET", f"/api/articles/{sharded.slugs[5]}"))[0] == 200
    for method, suffix, as_user, body in [
        ("POST", "/favorite", "eve", None),
        ("DELETE", "/favorite", "reader", None),
        ("PUT", "", "bruno", {"article": {"title": "Changed", "tagList": ["x", "y"]}}),
        ("PUT", "", "ana", {"article": {"title": "Not hers"}}),
        ("POST", "/comments", "chloe", {"comment": {"body": "hi"}}),
        ("DELETE", "", "reader", None),
    ]:
        got = await sharded.call(
            method, f"/api/articles/{sharded.slugs[5]}{suffix}", as_user, json=body
        )
        expected = await plain.call(
            method, f"/api/articles/{plain.slugs[5]}{suffix}", as_user, json=body
        )
        assert _without_made(got) == _without_made(expected), (method, suffix, as_user)
    await _same(both, "GET", "/api/articles?limit=20", "eve")
    got = await sharded.call("GET", f"/api/articles/{sharded.slugs[5]}")
    expected = await plain.call("GET", f"/api/articles/{plain.slugs[5]}")
    assert _without_made(got) == _without_made(expected)
    assert got[1]["article"]["title"] == "Changed"
    for rw in both:
        assert (await rw.call("DELETE", f"/api/articles/{rw.slugs[0]}", "ana"))[0] == 204
        assert (await rw.call("GET", f"/api/articles/{rw.slugs[0]}"))[0] == 404
    await _same(both, "GET", "/api/articles?limit=20")
    await _same(both, "GET", "/api/tags")


async def test_comments_read_and_go_as_on_one_database(both: list[RealWorld]) -> None:
    sharded, plain = both
    for as_user in (None, "reader", "ana"):
        got = await sharded.call("GET", f"/api/articles/{sharded.slugs[0]}/comments", as_user)
        expected = await plain.call("GET", f"/api/articles/{plain.slugs[0]}/comments", as_user)
        assert _without_made(got) == _without_made(expected)
        assert [c["author"]["username"] for c in got[1]["comments"]] == ["ana", "bruno", "reader"]
    _, listed = await sharded.call("GET", f"/api/articles/{sharded.slugs[0]}/comments", "reader")
    assert [c["author"]["following"] for c in listed["comments"]] == [True, False, False]
    bruno_comment = listed["comments"][1]["id"]
    path = f"/api/articles/{sharded.slugs[0]}/comments/{bruno_comment}"
    assert (await sharded.call("DELETE", path, "reader"))[0] == 403
    assert (await sharded.call("DELETE", path, "bruno"))[0] == 204
    _, after = await sharded.call("GET", f"/api/articles/{sharded.slugs[0]}/comments")
    assert [c["author"]["username"] for c in after["comments"]] == ["ana", "reader"]


async def test_tags_profiles_and_accounts_answer_as_on_one_database(
    both: list[RealWorld],
) -> None:
    assert (await _same(both, "GET", "/api/tags"))["tags"] == ["even", "odd"]
    for as_user in (None, "reader"):
        for name in ("ana", "bruno", "nobody"):
            await _same(both, "GET", f"/api/profiles/{name}", as_user)
    await _same(both, "POST", "/api/profiles/bruno/follow", "reader")
    await _same(both, "GET", "/api/profiles/bruno", "reader")
    await _same(both, "POST", "/api/profiles/nobody/follow", "reader")
    await _same(both, "DELETE", "/api/profiles/ana/follow", "reader")
    await _same(both, "GET", "/api/articles/feed?limit=20", "reader")
    await _same(both, "GET", "/api/user", "eve")
    await _same(both, "GET", "/api/user")
    await _same(both, "PUT", "/api/user", "eve", json={"user": {"bio": "Hi", "username": "eva"}})
    await _same(both, "PUT", "/api/user", "eve", json={"user": {"username": "ana"}})
    await _same(both, "GET", "/api/profiles/eva", "reader")
    login = {"user": {"email": "eve@example.com", "password": PASSWORD}}
    assert (await _same(both, "POST", "/api/users/login", json=login))["user"]["username"] == "eva"
    wrong = {"user": {"email": "eve@example.com", "password": "wrong password"}}
    await _same(both, "POST", "/api/users/login", json=wrong)
    unknown = {"user": {"email": "nobody@example.com", "password": PASSWORD}}
    await _same(both, "POST", "/api/users/login", json=unknown)
    taken = {"user": {"username": "ANA", "email": "new@example.com", "password": PASSWORD}}
    await _same(both, "POST", "/api/users", json=taken)


async def test_the_realworld_postman_suite_passes_against_a_sharded_server(
    emptied: dict[str, Any],
) -> None:
    if not (SUITE_DIR / "Conduit.postman_collection.json").exists():
        pytest.skip(f"no Postman collection in {SUITE_DIR} (set FASTPOST_REALWORLD_DIR)")
    if not (NEWMAN_HOME / "node_modules" / ".bin" / "newman").exists() and not shutil.which("npm"):
        pytest.skip("newman is not installed and npm is not there to install it")
    shard_urls = emptied["shards"]
    env = {
        **os.environ,
        "FASTPOST_DB__URL": shard_urls[0],
        "FASTPOST_DB__SHARDS": json.dumps(shard_urls),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [str(POSTMAN_SCRIPT), str(SUITE_DIR)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert summary.startswith("newman: requests ")
    assert "(failed 0), assertions" in summary
    assert summary.endswith("(failed 0)")
    # It was the sharded app that answered: the suite's users are in the directory and on
    # their databases.
    (claimed,) = await execute(shard_urls[0], "SELECT count(*) FROM user_directory")
    users = [(await execute(url, "SELECT count(*) FROM users"))[0][0] for url in shard_urls]
    assert claimed[0] == sum(users) > 0


async def test_seeded_articles_are_read_by_slug_from_their_database(
    client: httpx.AsyncClient, emptied: dict[str, Any], tmp_path: Path
) -> None:
    env = {**environment(tmp_path), "FASTPOST_DB__SHARDS": json.dumps(emptied["shards"])}
    small = ("--users", "12", "--posts", "40", "--follows", "10", "--likes", "20")
    seeded = fastpost("seed", "--if-empty", *small, env=env, cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    for url in emptied["shards"]:
        found = await execute(url, "SELECT slug FROM posts WHERE status = 'published' LIMIT 5")
        assert found, "every database holds articles"
        for (slug,) in found:
            response = await client.get(f"/api/articles/{slug}")
            assert response.status_code == 200, response.text
            assert response.json()["article"]["slug"] == slug
    listed = (await client.get("/api/articles", params={"limit": 100})).json()
    assert len(listed["articles"]) == listed["articlesCount"] > 0


def test_a_sharded_slug_carries_its_logical_shard_in_its_random_suffix() -> None:
    for logical in range(32):
        slug = make_sharded_slug("Hello, World!", logical)
        assert slug.startswith("hello-world-")
        assert logical_shard_of_slug(slug) == logical
    assert len({make_sharded_slug("same", 3) for _ in range(50)}) == 50
    for not_sharded in ("hello", "hello-world", "a-1234567", "a-ABCDEF12", "a-+1234567", "-"):
        assert logical_shard_of_slug(not_sharded) is None


async def test_a_list_page_at_any_offset_is_one_statement_per_database(
    both: list[RealWorld], shards: Shards
) -> None:
    sharded, _ = both
    reads = _count_reads(shards)
    for query in ("limit=3&offset=0", "limit=3&offset=7", "tag=even&limit=2&offset=3"):
        for as_user in ("reader", "ana"):  # logged in: not the cached home page
            status, _ = await sharded.call("GET", f"/api/articles?{query}", as_user)
            assert status == 200
            assert reads == [1, 1], query
            reads[:] = [0, 0]
