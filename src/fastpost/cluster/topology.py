"""What runs where in a local cluster: the parts, their ports, and what each instance is told.

`plan()` and `instance_environment()` with their defaults describe the topology that
`fastpost cluster up` starts and that ops/compose.yaml describes for Docker (a test compares
the two).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastpost.settings import ApiSettings, DatabaseSettings

# "shard_server": the second PostgreSQL server of sharded mode (`cluster up --shards N`).
Kind = Literal["nginx", "instance", "primary", "replica", "shard_server", "redis"]

DEFAULT_INSTANCES = 3
DEFAULT_REPLICAS = 1
DEFAULT_PORT = 8080
# The course's upstream block (the README sets our nginx configuration beside it) numbers
# its servers from 8001; PostgreSQL and Redis sit one above their usual ports so that a
# cluster never meets the machine's own servers.
DEFAULT_INSTANCE_PORT = 8001
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_REDIS_PORT = 6380
DATABASE = "fastpost"
# Connections per worker: K instances x W workers x (5 + 3) stays far under the primary's
# max_connections (`cluster up` checks the total before it starts anything).
POOL_SIZE = 5
WRITE_POOL_SIZE = 3
# How far behind a replica may fall before instances stop reading from it (fastpost's default,
# written out so that the deploy files show it).
REPLICA_MAX_LAG_SECONDS: float = DatabaseSettings.model_fields["replica_max_lag_seconds"].default
# With this many instances or more, the last one waits as a backup unless told otherwise
# (as the course's upstream block does).
BACKUP_FROM = 3
# `redis-cli --cluster create` wants at least three masters.
MIN_REDIS_MASTERS = 3
# Sharded mode: from 2 databases (one is only unsharded mode) to one per logical shard.
MIN_SHARDS = 2
MAX_SHARDS = 32
SHARD_SERVER = "shard-server"


@dataclass(frozen=True)
class Part:
    kind: Kind
    name: str
    port: int
    # For instances: nginx's `weight`, and whether the instance is the `backup` server.
    weight: int = 1
    backup: bool = False


def plan(
    *,
    instances: int = DEFAULT_INSTANCES,
    replicas: int = DEFAULT_REPLICAS,
    port: int = DEFAULT_PORT,
    instance_port: int = DEFAULT_INSTANCE_PORT,
    postgres_port: int = DEFAULT_POSTGRES_PORT,
    redis_port: int = DEFAULT_REDIS_PORT,
    weights: Sequence[int] | None = None,
    backup: bool | None = None,
    redis_masters: int = 0,
    shards: int = 0,
) -> list[Part]:
    """Return the parts of a cluster in the order they start (primary first, nginx last).

    Instances, replicas: consecutive ports from `instance_port` and `postgres_port + 1`.
    `redis_masters`: 0 for one Redis; else a Redis Cluster of that many masters,
    `redis-1`, `redis-2`... on consecutive ports from `redis_port`.
    `weights` give the active instances' nginx weights (1 each by default); `backup` makes
    the last instance the upstream's backup (default: with BACKUP_FROM instances or more).
    `shards`: 0 for one database; else sharded mode over that many databases, spread over
    the primary and a second PostgreSQL server, `shard-server` (see `shard_databases`).
    """
    if instances < 1:
        raise ValueError("a cluster needs at least one instance")
    if replicas < 0:
        raise ValueError("replicas cannot be negative")
    if backup is None:
        backup = instances >= BACKUP_FROM
    if backup and instances < 2:
        raise ValueError("a backup instance needs at least one other instance to stand in for")
    active = instances - 1 if backup else instances
    if weights is None:
        weights = [1] * active
    if len(weights) != active:
        raise ValueError(
            f"{len(weights)} weights for {active} active instance(s)"
            + (" (the last of the instances is the backup)" if backup else "")
        )
    if any(weight < 1 for weight in weights):
        raise ValueError("weights are whole numbers from 1")
    if redis_masters and redis_masters < MIN_REDIS_MASTERS:
        raise ValueError(f"a Redis Cluster needs at least {MIN_REDIS_MASTERS} masters")
    if shards and not MIN_SHARDS <= shards <= MAX_SHARDS:
        raise ValueError(f"sharded mode takes {MIN_SHARDS} to {MAX_SHARDS} databases")
    if shards and replicas:
        # DatabaseSettings refuses FASTPOST_DB__SHARDS with FASTPOST_DB__REPLICA_URLS.
        raise ValueError("sharded mode does not take read replicas yet: pass --replicas 0")
    parts = [Part("primary", "primary", postgres_port)]
    parts += [Part("replica", f"replica-{n}", postgres_port + n) for n in range(1, replicas + 1)]
    if shards:
        parts.append(Part("shard_server", SHARD_SERVER, postgres_port + replicas + 1))
    if redis_masters:
        parts += [
            Part("redis", f"redis-{n}", redis_port + n - 1) for n in range(1, redis_masters + 1)
        ]
    else:
        parts.append(Part("redis", "redis", redis_port))
    for n in range(1, instances + 1):
        is_backup = backup and n == instances
        weight = 1 if is_backup else weights[n - 1]
        parts.append(Part("instance", f"instance-{n}", instance_port + n - 1, weight, is_backup))
    parts.append(Part("nginx", "nginx", port))
    return parts


def postgres_url(
    port: int, *, host: str = "127.0.0.1", user: str = "postgres", database: str = DATABASE
) -> str:
    """Return the SQLAlchemy URL of the fastpost database (or `database`) on a PostgreSQL
    node."""
    return f"postgresql+asyncpg://{user}@{host}:{port}/{database}"


def shard_databases(shards: int) -> list[tuple[str, str]]:
    """Where each database of `cluster up --shards N` lives: (server part name, database
    name), in FASTPOST_DB__SHARDS order.

    Database 0, the directory, is the primary's fastpost database; the others alternate
    between the second server and the primary, starting on the second server: with two
    databases each server holds one, with more they split them as evenly as they can."""
    placed = [("primary", DATABASE)]
    for index in range(1, shards):
        server = SHARD_SERVER if index % 2 else "primary"
        placed.append((server, f"{DATABASE}_shard_{index}"))
    return placed


def instance_environment(
    parts: Sequence[Part] | None = None,
    *,
    host: str = "127.0.0.1",
    hosts: Mapping[str, str] | None = None,
    postgres_user: str = "postgres",
    secret_key: str | None = None,
    data_dir: Path | None = None,
    shards: int = 0,
) -> dict[str, str]:
    """Return the FASTPOST_* variables every instance of the cluster `parts` is started with.

    The signing key must be the same on every instance (a token issued by one is checked by
    another), so it is given here rather than made by each instance; `data_dir` is each
    instance's own (its prometheus_client folder lives there). Every part is on `host`
    unless `hosts` names another for it (by part name: {"primary": "db-primary"}, say).
    `shards`: sharded mode over that many databases (FASTPOST_DB__SHARDS, placed by
    `shard_databases`).
    """
    parts = plan() if parts is None else parts
    where = {**{p.name: host for p in parts}, **(hosts or {})}
    by_kind = {kind: [p for p in parts if p.kind == kind] for kind in ("primary", "replica")}
    (primary,) = by_kind["primary"]
    redis = [p for p in parts if p.kind == "redis"]
    env = {
        "FASTPOST_ENV": "production",
        "FASTPOST_DB__URL": postgres_url(
            primary.port, host=where[primary.name], user=postgres_user
        ),
        "FASTPOST_DB__POOL_SIZE": str(POOL_SIZE),
        "FASTPOST_DB__WRITE_POOL_SIZE": str(WRITE_POOL_SIZE),
        "FASTPOST_REDIS_URL": redis_url(redis, where),
        # nginx's client_max_body_size is rendered from the same figure.
        "FASTPOST_API__MAX_BODY_BYTES": str(max_body_bytes()),
        # JSON lines carry the request id that nginx's JSON log carries too.
        "FASTPOST_OBSERVABILITY__LOG_FORMAT": "json",
        # Prometheus scrapes each instance directly: from this host, or in ops/compose.yaml
        # from another container on the compose network. nginx never passes /metrics on.
        "FASTPOST_SECURITY__METRICS_ALLOW": "127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
    }
    if by_kind["replica"]:
        env["FASTPOST_DB__REPLICA_URLS"] = ",".join(
            postgres_url(r.port, host=where[r.name], user=postgres_user) for r in by_kind["replica"]
        )
        env["FASTPOST_DB__REPLICA_MAX_LAG_SECONDS"] = str(REPLICA_MAX_LAG_SECONDS)
    if shards:
        port_of = {p.name: p.port for p in parts}
        env["FASTPOST_DB__SHARDS"] = json.dumps(
            [
                postgres_url(port_of[server], host=where[server], user=postgres_user, database=name)
                for server, name in shard_databases(shards)
            ]
        )
    if secret_key is not None:
        env["FASTPOST_AUTH__SECRET_KEY"] = secret_key
    if data_dir is not None:
        env["FASTPOST_DATA_DIR"] = str(data_dir)
    return env


def redis_url(redis: Sequence[Part], where: Mapping[str, str]) -> str:
    """FASTPOST_REDIS_URL for the cluster's Redis: one server, or every master of a Redis
    Cluster (fastpost.redis_client's URL forms)."""
    if len(redis) == 1:
        return f"redis://{where[redis[0].name]}:{redis[0].port}/0"
    return "redis+cluster://" + ",".join(f"{where[p.name]}:{p.port}" for p in redis)


def is_redis_cluster(parts: Sequence[Part]) -> bool:
    return sum(p.kind == "redis" for p in parts) > 1


def max_body_bytes() -> int:
    """Return the largest request body an instance accepts (its default setting)."""
    return ApiSettings().max_body_bytes
