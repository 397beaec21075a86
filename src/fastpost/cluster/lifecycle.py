"""Start, watch and stop a local cluster's parts, each written in the state file as it starts.

Under the state directory:

    state.json, secret_key       what runs (see fastpost.cluster.state), the shared signing key
    primary/, replica-N/         the PostgreSQL nodes: data folder, log, socket
                                 (fastpost.cluster.postgres)
    shard-server/                with --shards: the second PostgreSQL server, a primary too
    redis/                       redis-server's folder and log
    redis-N/                     with --redis-cluster: each node's folder, log, nodes.conf
    instances/instance-N/        an instance's working folder, data folder and log
    nginx/                       nginx's prefix: nginx.conf, logs/, temp/
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastpost.cluster import instances, nginx, processes, redis
from fastpost.cluster.state import ClusterState, Started, secret_key
from fastpost.cluster.topology import (
    DATABASE,
    POOL_SIZE,
    WRITE_POOL_SIZE,
    Part,
    instance_environment,
    is_redis_cluster,
    shard_databases,
)

if TYPE_CHECKING:
    from fastpost.cluster.postgres import PgNode
    from fastpost.seed import SeedPlan

# The parts that are PostgreSQL servers (fastpost.cluster.postgres nodes).
POSTGRES_KINDS = ("primary", "replica", "shard_server")

# Importing fastpost and opening its pools takes a few seconds on a busy machine.
READY_TIMEOUT_SECONDS = 90.0
# Connections a PostgreSQL server keeps for maintenance beside what the instances may open
# (superuser_reserved_connections is 3 by default, `cluster status` takes one).
SPARE_CONNECTIONS = 5


Step = Callable[[str], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _quietly(description: str) -> Iterator[None]:
    yield


def missing_binaries() -> list[str]:
    """Return why each of nginx, redis-server and PostgreSQL's server binaries that the
    cluster needs is missing here, with how to install it (empty: none is missing)."""
    from fastpost.cluster import postgres

    problems = []
    for find, missing in (
        (nginx.nginx_binary, nginx.NginxMissing),
        (redis.redis_binary, redis.RedisMissing),
        (postgres.pg_bindir, postgres.PostgresMissing),
    ):
        try:
            find()
        except missing as exc:
            problems.append(str(exc))
    return problems


class PartFailed(RuntimeError):
    """A part did not come up; the message says which and where its log is."""


@dataclass(frozen=True)
class PartStatus:
    kind: str
    name: str
    port: int
    pid: int | None
    up: bool
    # Replicas: seconds of replay lag; instances: requests answered, nginx weight, backup.
    lag_seconds: float | None = None
    requests: int | None = None
    weight: int | None = None
    backup: bool | None = None
    # Sharded mode: the shard databases a PostgreSQL server holds (FASTPOST_DB__SHARDS order).
    shard_databases: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        always = ("kind", "name", "port", "pid", "up")
        return {k: v for k, v in self.__dict__.items() if v is not None or k in always}


class Cluster:
    """The parts of one state directory: starting them, their status, stopping them."""

    def __init__(self, state_dir: Path) -> None:
        self.state = ClusterState.load(state_dir) or ClusterState(state_dir)
        self.dir = self.state.state_dir

    # Starting

    def up(
        self,
        parts: Sequence[Part],
        *,
        workers: int = 1,
        posts: int = 1000,
        apply_delay: str | None = None,
        shards: int = 0,
        step: Step = _quietly,
    ) -> None:
        """Start every part of `parts` in order, migrate and seed the primary (in sharded mode,
        every database of `shards`), and wait until each answers. `step(description)` wraps
        each stage (a progress display)."""
        by_kind = {
            kind: [p for p in parts if p.kind == kind]
            for kind in ("primary", "replica", "shard_server")
        }
        (primary_part,) = by_kind["primary"]
        redis_parts = [p for p in parts if p.kind == "redis"]
        (nginx_part,) = [p for p in parts if p.kind == "nginx"]
        instance_parts = [p for p in parts if p.kind == "instance"]
        self.state.settings = {
            "workers": workers,
            "replica_apply_delay": apply_delay,
            "shards": shards,
        }
        self.state.save()
        with step(f"PostgreSQL primary on :{primary_part.port} (initdb, start)"):
            primary = self.start_primary(primary_part)
        servers = {primary.name: primary}
        for part in by_kind["shard_server"]:
            with step(f"PostgreSQL {part.name} on :{part.port} (initdb, start)"):
                servers[part.name] = self.start_primary(part)
        per_worker = POOL_SIZE + WRITE_POOL_SIZE
        placed = shard_databases(shards) if shards else [(primary.name, DATABASE)]
        for name, node in servers.items():
            # Each worker has both pools on every database; a server's databases share its
            # max_connections.
            here = sum(server == name for server, _ in placed)
            self.check_connection_budget(
                node, connections=len(instance_parts) * workers * per_worker * here
            )
        url = primary.url(DATABASE, driver="postgresql+asyncpg")
        if shards:
            shard_urls = [
                servers[server].url(database, driver="postgresql+asyncpg")
                for server, database in placed
            ]
            with step(f"{shards} shard databases: migrate, shards init, seed {posts:,} posts"):
                for server, database in placed:
                    asyncio.run(_create_database(servers[server].url(), database))
                migrate_and_seed_shards(self.dir, shard_urls, posts=posts)
        else:
            with step(f"migrate, seed {posts:,} posts"):
                migrate_and_seed(self.dir, url, posts=posts)
        replicas = []
        for part in by_kind["replica"]:
            delay = f", replays {apply_delay} late" if apply_delay else ""
            with step(f"PostgreSQL {part.name} on :{part.port} (pg_basebackup, start{delay})"):
                replicas.append(self.start_replica(part, primary, apply_delay=apply_delay))
        self.start_redis(redis_parts, step=step, planned={p.port for p in parts})
        env = instance_environment(parts, shards=shards)
        env["FASTPOST_DB__URL"] = url
        if replicas:
            env["FASTPOST_DB__REPLICA_URLS"] = ",".join(
                r.url(DATABASE, driver="postgresql+asyncpg") for r in replicas
            )
        self.state.settings["instance_env"] = env
        self.state.save()
        with step(f"{len(instance_parts)} instance(s) x {workers} worker(s)"):
            # Started together, waited for together: each takes seconds to import and connect.
            started = [self.start_instance(p, env=env, workers=workers) for p in instance_parts]
            for instance in started:
                self.wait_ready(instance)
        with step(f"nginx on :{nginx_part.port}"):
            self.wait_ready(self.start_nginx(parts))

    def start_primary(self, part: Part) -> PgNode:
        """Create and start the primary (or the shard server, a primary of its own), and
        create fastpost's database in it."""
        from fastpost.cluster import postgres

        node = postgres.init_primary(self.dir, port=part.port, name=part.name)
        self._record_node(part, node)
        postgres.start(node)
        self.state.set_pid(part.name, node.pid())
        asyncio.run(_create_database(node.url()))
        return node

    def check_connection_budget(self, node: PgNode, *, connections: int) -> None:
        """Refuse to go on when the instances' pools could exceed the primary's max_connections."""
        limit = asyncio.run(_max_connections(node.url()))
        if connections > limit - SPARE_CONNECTIONS:
            raise PartFailed(
                f"the instances' pools may open {connections} connections "
                f"(instances x workers x {POOL_SIZE + WRITE_POOL_SIZE}), but {node.name} allows "
                f"{limit} (keep under {limit - SPARE_CONNECTIONS}): start fewer instances or "
                "workers"
            )

    def start_replica(self, part: Part, primary: PgNode, *, apply_delay: str | None) -> PgNode:
        """Clone the primary into a streaming replica and start it."""
        from fastpost.cluster import postgres

        node = postgres.init_replica(
            primary, self.dir, port=part.port, name=part.name, apply_delay=apply_delay
        )
        self._record_node(part, node)
        postgres.start(node)
        self.state.set_pid(part.name, node.pid())
        return node

    def _record_node(self, part: Part, node: PgNode) -> None:
        # Before it starts: if `up` dies while the server starts, `down` finds its data folder.
        self.state.record(Started.of(part, directory=node.data_dir, log_file=node.log_file))

    def start_redis(
        self, parts: Sequence[Part], *, step: Step = _quietly, planned: Set[int] = frozenset()
    ) -> None:
        """Start one Redis, or (several parts) the nodes of a Redis Cluster and form it; its
        bus ports avoid `planned`, the ports of parts that have not started yet."""
        if not is_redis_cluster(parts):
            (part,) = parts
            with step(f"Redis on :{part.port}"):
                self.wait_ready(self._start_redis_node(part, self.dir / "redis"))
            return
        ports = ", ".join(f":{p.port}" for p in parts)
        with step(f"Redis Cluster of {len(parts)} masters on {ports}"):
            # A port free now may be one planned for a part that starts later (the kernel
            # hands out any port nobody has bound yet): a bus there would take it first.
            taken = set(planned)
            started = []
            for p in parts:
                bus_port = processes.free_port()
                while bus_port in taken:
                    bus_port = processes.free_port()
                taken.add(bus_port)
                started.append(self._start_redis_node(p, self.dir / p.name, cluster_port=bus_port))
            for node in started:
                self.wait_ready(node)
            redis.create_cluster([p.port for p in parts])

    def _start_redis_node(
        self, part: Part, directory: Path, *, cluster_port: int | None = None
    ) -> Started:
        log_file = directory / "redis.log"
        pid = redis.start(directory, port=part.port, log_file=log_file, cluster_port=cluster_port)
        started = Started.of(part, directory=directory, log_file=log_file, pid=pid)
        self.state.record(started)
        return started

    def start_instance(self, part: Part, *, env: Mapping[str, str], workers: int) -> Started:
        """Start one instance with the cluster's settings `env` and its own data folder."""
        directory = self.dir / "instances" / part.name
        log_file = directory / "instance.log"
        own = {
            **env,
            # The same key on every instance (a token one issues, another checks), kept
            # out of the state file.
            "FASTPOST_AUTH__SECRET_KEY": secret_key(self.dir),
            "FASTPOST_DATA_DIR": str(directory / "data"),
        }
        pid = instances.start(
            directory,
            port=part.port,
            workers=workers,
            env=instances.environment(own),
            log_file=log_file,
        )
        started = Started.of(part, directory=directory, log_file=log_file, pid=pid)
        self.state.record(started)
        return started

    def start_nginx(self, parts: Sequence[Part]) -> Started:
        """Render nginx.conf for `parts`, check it with `nginx -t`, and start nginx."""
        (part,) = [p for p in parts if p.kind == "nginx"]
        prefix = self.dir / "nginx"
        nginx.prepare(prefix, parts)
        nginx.check(prefix)
        log_file = prefix / "logs" / "nginx.out"
        pid = nginx.start(prefix, log_file=log_file)
        started = Started.of(part, directory=prefix, log_file=log_file, pid=pid)
        self.state.record(started)
        return started

    def restart_instance(self, name: str) -> Started:
        """Start the instance `name` again as `up` started it (for tests of failures)."""
        (old,) = [p for p in self.state.parts if p.name == name]
        env = self.state.settings["instance_env"]
        return self.start_instance(old.part, env=env, workers=self.state.settings["workers"])

    # Waiting

    def wait_ready(self, started: Started, *, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until the part answers; raise PartFailed (with its log's tail) if it cannot."""
        deadline = time.monotonic() + timeout
        while not self.answers(started):
            if started.pid is not None and not processes.is_running(started.pid, _marker(started)):
                raise PartFailed(f"{started.name} exited: {_tail(started.log_file)}")
            if time.monotonic() > deadline:
                raise PartFailed(
                    f"{started.name} did not answer within {timeout:.0f} s: "
                    f"{_tail(started.log_file)}"
                )
            time.sleep(0.2)

    def answers(self, started: Started) -> bool:
        """Say whether the part answers on its port."""
        if started.kind == "instance":
            return instances.is_ready(started.port)
        if started.kind == "redis":
            return redis.is_up(started.port)
        if started.kind == "nginx":
            return processes.accepts(started.port)
        from fastpost.cluster import postgres

        return postgres.is_up(_node(started))

    # Watching

    def status(self) -> list[PartStatus]:
        """Return each recorded part's pid, whether it answers, and its figures."""
        statuses = []
        held: dict[str, list[str]] = {}
        if self.state.settings.get("shards"):
            for server, database in shard_databases(self.state.settings["shards"]):
                held.setdefault(server, []).append(database)
        for started in self.state.parts:
            pid = started.pid
            lag = requests = weight = backup = None
            if started.kind in POSTGRES_KINDS:
                from fastpost.cluster import postgres

                node = _node(started)
                pid = node.pid()
                up = postgres.is_up(node)
                if up and started.kind == "replica":
                    lag = postgres.replay_lag_seconds(node)
            else:
                if not processes.is_running(pid, _marker(started)):
                    pid = None
                up = pid is not None and self.answers(started)
            if started.kind == "instance":
                requests = instances.requests_served(started.port) if up else None
                weight, backup = started.weight, started.backup
            statuses.append(
                PartStatus(
                    started.kind,
                    started.name,
                    started.port,
                    pid,
                    up,
                    lag_seconds=lag,
                    requests=requests,
                    weight=weight,
                    backup=backup,
                    shard_databases=held.get(started.name),
                )
            )
        return statuses

    # Stopping

    def stop_part(self, started: Started) -> None:
        """Stop one part as recorded (nothing happens if it no longer runs)."""
        if started.kind in POSTGRES_KINDS:
            from fastpost.cluster import postgres

            node = _node(started)
            if node.pid() is not None:
                postgres.stop(node, mode="fast")
        elif started.pid is not None:
            stop = {"nginx": nginx.stop, "redis": redis.stop, "instance": instances.stop}
            stop[started.kind](started.pid)

    def down(self, on_stop: Callable[[Started], None] = lambda started: None) -> list[Started]:
        """Stop every recorded part, front to back (nginx first, the primary last); parts of
        one kind together. Return what was stopped."""
        stopped: list[Started] = []
        failures: list[str] = []

        def stop(started: Started) -> None:
            # One part that will not stop must not keep the others running.
            try:
                self.stop_part(started)
            except Exception as exc:
                failures.append(f"{started.name}: {exc}")

        for kind in ("nginx", "instance", "redis", "replica", "shard_server", "primary"):
            parts = [p for p in reversed(self.state.parts) if p.kind == kind]
            for started in parts:
                on_stop(started)
            # Each instance may take seconds to finish its requests: they wait side by side.
            with ThreadPoolExecutor(max_workers=max(1, len(parts))) as pool:
                list(pool.map(stop, parts))
            stopped += parts
        # The state file stays: `status` shows everything down, the next `up` in this folder
        # knows which folders it may clear.
        if failures:
            raise PartFailed("could not stop " + "; ".join(failures))
        return stopped

    def remove_previous(self) -> None:
        """Delete the folders of a cluster that ran here before (and is down)."""
        for started in self.state.parts:
            directory = Path(started.directory)
            if started.kind in POSTGRES_KINDS:
                # The node's folder: its data folder, log and socket (fastpost.cluster.postgres).
                directory = directory.parent
            # Only folders inside the state directory: never anything a state file points
            # to elsewhere.
            if directory.is_relative_to(self.dir) and directory != self.dir:
                shutil.rmtree(directory, ignore_errors=True)
        self.state.parts = []
        self.state.settings = {}


def _marker(started: Started) -> str:
    return {"nginx": nginx.MARKER, "redis": redis.MARKER, "instance": instances.MARKER}.get(
        started.kind, "postgres"
    )


def _node(started: Started) -> PgNode:
    from fastpost.cluster.postgres import PgNode

    return PgNode(
        started.name,
        "replica" if started.kind == "replica" else "primary",
        started.port,
        Path(started.directory),
        Path(started.log_file),
    )


def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"no log at {path}"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])


def migrate_and_seed(state_dir: Path, url: str, *, posts: int) -> None:
    """Migrate the database at `url` and load `posts` generated posts (with users, follows
    and likes in proportion) into it."""
    from fastpost.db import Database
    from fastpost.migrations import upgrade
    from fastpost.seed import seed
    from fastpost.settings import DatabaseSettings, Settings

    settings = Settings(db=DatabaseSettings(url=url), data_dir=state_dir / "seed")

    async def migrate() -> None:
        db = Database(settings.db)
        try:
            await upgrade(db.write_engine, settings.db)
        finally:
            await db.dispose()

    asyncio.run(migrate())
    if posts:
        asyncio.run(seed(settings, _seed_plan(posts), lambda phase, rows: None))


def migrate_and_seed_shards(state_dir: Path, urls: Sequence[str], *, posts: int) -> None:
    """Prepare the databases `urls` for sharded mode (`fastpost shards init`: migrate, shard
    map, directory) and load `posts` generated posts, each row on its logical shard's
    database (`fastpost seed` in sharded mode)."""
    from fastpost.settings import DatabaseSettings, Settings
    from fastpost.shards.seed import seed_shards
    from fastpost.shards.setup import init_shards

    database = DatabaseSettings(url=urls[0], shards=list(urls))
    asyncio.run(init_shards(database))
    if posts:
        settings = Settings(db=database, data_dir=state_dir / "seed")
        asyncio.run(seed_shards(settings, _seed_plan(posts), lambda phase, rows: None))


def _seed_plan(posts: int) -> SeedPlan:
    from fastpost.seed import SeedPlan

    users = max(10, posts // 10)
    return SeedPlan(users=users, posts=posts, follows=posts, likes=3 * posts, tags=20)


async def _create_database(url: str, database: str = DATABASE) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Names come from topology.shard_databases, never from input.
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def _max_connections(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
