"""FASTPOST_REDIS_URL: one server or a Redis Cluster, and what is refused at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastpost.redis_client import parse_redis_url
from fastpost.settings import Settings


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380/2", "unix:///run/r.sock"],
)
def test_a_server_url_is_one_server(url: str) -> None:
    location = parse_redis_url(url)
    assert not location.cluster
    assert location.url == url


def test_a_cluster_url_lists_the_nodes_to_start_from() -> None:
    location = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002,node-4")
    assert location.cluster
    assert location.nodes == (
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("::1", 7002),
        ("node-4", 6379),
    )
    assert location.options == {}


def test_a_list_of_nodes_is_a_cluster_and_options_apply_to_every_node() -> None:
    location = parse_redis_url("rediss://app:s%40cret@h1:7000,h2:7000/0?socket_keepalive=true")
    assert location.nodes == (("h1", 7000), ("h2", 7000))
    assert location.options == {
        "username": "app",
        "password": "s@cret",
        "ssl": True,
        "socket_keepalive": True,
    }
    assert parse_redis_url("rediss+cluster://h1:7000").options == {"ssl": True}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://h1:7000/3", "database 0 only"),
        ("redis+cluster://", "at least one node"),
        ("redis+cluster://h1:port", "not a port number"),
        ("memcached://h1:11211", "a Redis URL starts with"),
        ("127.0.0.1:6379", "a Redis URL starts with"),
    ],
)
def test_a_url_that_cannot_work_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)


def test_settings_refuse_a_bad_redis_url_at_start_up() -> None:
    with pytest.raises(ValidationError, match="database 0 only"):
        Settings(redis_url="redis+cluster://h1:7000/1")
    assert Settings(redis_url="redis+cluster://h1:7000").redis_url == "redis+cluster://h1:7000"
