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


def test_mixed_scenario_has_the_course_weights_and_logs_in() -> None:
    requests = build("mixed", DATA, length=6000)
    counts = Counter((r.method, r.path) for r in requests)
    assert counts[("GET", "/posts/")] / counts[("POST", "/posts/")] == pytest.approx(3, rel=0.15)
    assert counts[("GET", "/users/me")] / counts[("POST", "/posts/")] == pytest.approx(2, rel=0.15)
    assert all(r.authorization for r in requests)


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
