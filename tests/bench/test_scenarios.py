"""Scenarios become request lists with the seeded ids and the logged-in users' tokens."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from fastpost.bench.requests_file import HttpRequest, read_requests, write_requests
from fastpost.bench.scenarios import Dataset, Session, build, needs_login, parse_route

DATA = Dataset(
    post_ids=[11, 12, 13],
    user_ids=[1, 2, 3],
    sessions=[Session(1, "Bearer a"), Session(2, "Bearer b")],
    slugs=["first-post-ab12", "second-post-cd34"],
)


def test_write_scenario_pairs_every_like_and_follow_with_its_undo() -> None:
    requests = build("write", DATA, length=300)
    for do, undo in itertools.pairwise(requests):
        if do.method == "POST" and do.path.endswith(("/like", "/follow")):
            assert (undo.method, undo.path, undo.authorization) == (
                "DELETE",
                do.path,
                do.authorization,
            )
    follows = [r for r in requests if r.path.endswith("/follow")]
    assert follows
    user_of = {s.authorization: s.user_id for s in DATA.sessions}
    assert all(r.path != f"/users/{user_of[r.authorization or '']}/follow" for r in follows)


def test_mixed_scenario_has_the_course_weights_exactly_in_every_cycle_and_logs_in() -> None:
    requests = build("mixed", DATA, length=600)

    assert len(requests) == 600
    # Every stretch of 6 (wherever a generator starts walking) holds 3 : 2 : 1 exactly.
    cycle = requests + requests[:5]
    for start in range(len(requests)):
        window = Counter(r.route for r in cycle[start : start + 6])
        assert window == {"GET /posts/": 3, "GET /users/me": 2, "POST /posts/": 1}
    assert all(r.authorization for r in requests)


def test_a_mix_is_written_out_in_whole_cycles() -> None:
    # 7 requests asked for: the list rounds up to the end of a cycle (6 turns, 12 requests).
    requests = build("mixed", DATA, length=7)
    assert Counter(r.route for r in requests) == {
        "GET /posts/": 6, "GET /users/me": 4, "POST /posts/": 2,
    }  # fmt: skip
    read = Counter(r.route for r in build("read", DATA, length=90))
    assert read["GET /posts/{id}"] == 4 * read["GET /users/{id}/posts"] == 40


def test_route_scenarios_fill_ids_and_log_in_only_where_needed() -> None:
    assert parse_route("route:/posts/{post_id}") == ("GET", "/posts/{post_id}")
    assert parse_route("route:POST /posts/") == ("POST", "/posts/")
    assert parse_route("read") is None
    detail = build("route:/posts/{post_id}", DATA, length=10)
    assert {r.path for r in detail} <= {"/posts/11", "/posts/12", "/posts/13"}
    assert not needs_login("post-detail")
    assert needs_login("me")
    assert needs_login("route:POST /posts/")
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_route("everything")


def test_request_list_round_trips_through_the_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "r.tsv"
    requests = [HttpRequest("GET", "/health"), HttpRequest("POST", "/posts/", "Bearer x", "{}")]
    write_requests(path, requests)
    assert read_requests(path) == requests
    assert requests[1].encode("h:1").endswith(b"Content-Length: 2\r\n\r\n{}")


def test_the_article_route_reads_the_seeded_posts_by_slug_anonymously() -> None:
    requests = build("article", DATA)

    assert {r.path for r in requests} == {f"/api/articles/{slug}" for slug in DATA.slugs}
    assert {(r.method, r.authorization) for r in requests} == {("GET", None)}
