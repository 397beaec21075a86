"""Redis clients for `FASTPOST_REDIS_URL`: one server, or a Redis Cluster.

The URL forms:
- `redis://[user:password@]host:port/db` (`rediss://` with TLS): one server, redis-py's
  own URL syntax.
- `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` with
  TLS): a Redis Cluster. The nodes listed are where the client starts: it learns the whole
  cluster, and later changes to it, from any of them. A cluster has database 0 only.
- `redis://host:port,host:port`: a list of nodes is a cluster too.

The same `+cluster` form is the one the `limits` library reads (`async+redis+cluster://`).
What fastpost keeps in Redis and how it names keys for the cluster's hash slots is
described in fastpost.cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# `redis+cluster` is not a scheme redis-py knows: it is ours, mapped to redis-py's own.
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SERVER_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PORT = 6379
# redis-py's cluster client refuses a command (MaxConnectionsError) rather than wait when a
# node already has this many connections; its default, 100, is reached by a worker serving
# a few hundred requests at once. The single-server client has no bound; nor, in effect,
# has this one: Redis's own `maxclients` (10,000 by default) is the limit that counts.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 10_000


@dataclass(frozen=True)
class RedisLocation:
    """Where Redis is, from a URL: one server (`nodes` empty), or a cluster's start nodes
    and the connection options every node shares (credentials, TLS, query options)."""

    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)


def parse_redis_url(url: str) -> RedisLocation:
    """Read a `FASTPOST_REDIS_URL`; raise ValueError saying what is wrong with it."""
    from redis.asyncio.connection import SSLConnection, parse_url

    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in (*_SERVER_SCHEMES, *_CLUSTER_SCHEMES):
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+cluster:// or "
            f"rediss+cluster://, not {url.partition(':')[0]!r}"
        )
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    credentials, at, hosts = netloc.rpartition("@")
    if scheme not in _CLUSTER_SCHEMES and "," not in hosts:
        parse_url(url)  # what redis-py will refuse, refused now
        return RedisLocation(url)
    base = _CLUSTER_SCHEMES.get(scheme, scheme)
    if base == "unix":
        raise ValueError("a Redis Cluster is reached over TCP: list its nodes as host:port")
    nodes = tuple(_host_and_port(node) for node in hosts.split(",") if node.strip())
    if not nodes:
        raise ValueError("a Redis Cluster URL lists at least one node, as host:port")
    # The options every node shares, read by redis-py's own parser from a one-node URL.
    options: dict[str, Any] = dict(
        parse_url(f"{base}://{credentials}{at}{hosts.split(',')[0]}{tail}")
    )
    options.pop("host", None)
    options.pop("port", None)
    if options.pop("db", 0) != 0:
        raise ValueError("a Redis Cluster has database 0 only: drop the /N from the URL")
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return RedisLocation(url, nodes, options)


def _host_and_port(node: str) -> tuple[str, int]:
    node = node.strip()
    if node.startswith("["):  # [::1]:7000
        host, _, port = node[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = node.rpartition(":") if ":" in node else (node, "", "")
    if not host:
        raise ValueError(f"not a host:port in the Redis URL: {node!r}")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"not a port number in the Redis URL: {node!r}") from None


def connect(location: RedisLocation, **options: Any) -> Any:
    """An asyncio client: `redis.asyncio.Redis` for one server, `RedisCluster` for a
    cluster; `options` (timeouts, say) apply to every connection. Nothing is connected yet:
    the first command connects, so a Redis that is down when fastpost starts is no error."""
    if not location.cluster:
        import redis.asyncio as redis

        return redis.Redis.from_url(location.url, **options)
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],
        max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
        # One more try, at once, on the refreshed map of the cluster (a master that failed
        # over), then the error. redis-py's default, 10 tries with a growing back-off, held
        # each command for 4-6 s while a master was down (tests/cache/test_cluster.py::
        # test_a_master_going_away_never_fails_a_call): every user of this client treats
        # Redis as best effort and has a faster way on (the database, the primary).
        retry=Retry(NoBackoff(), retries=1),
        **location.options,
        **options,
    )


def connect_node(location: RedisLocation, host: str, port: int, **options: Any) -> Any:
    """A client of one node of the cluster at `location`, with the cluster's credentials
    and TLS: for a connection that must stay on one node (a sharded subscription)."""
    import redis.asyncio as redis

    return redis.Redis(host=host, port=port, **location.options, **options)
