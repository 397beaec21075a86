"""Helpers shared by tests of several modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from fastpost.cluster.postgres import PgNode
from fastpost.cluster.processes import free_port
from fastpost.db import Database
from fastpost.security import Passwords, Verification
from fastpost.settings import Settings
from tests.servers import stop_group, wait_until_ready

T = TypeVar("T")


class GatedPasswords(Passwords):
    """Passwords whose hashes count themselves and wait at a gate, so that a test sees how
    many run at once and decides when they finish. The real Argon2 runs after the gate."""

    def __init__(self, settings: Settings, *, gated: bool = True) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def _counted(self, work: Callable[[], T]) -> T:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            # Bounded: a hash run on the event loop would otherwise block it for ever.
            if not self.gate.wait(timeout=10):
                raise AssertionError("the gate was never opened")
            return work()
        finally:
            with self._lock:
                self.running -= 1

    def hash_sync(self, password: str) -> str:
        return self._counted(lambda: super(GatedPasswords, self).hash_sync(password))

    def verify_sync(self, password_hash: str | None, password: str) -> Verification:
        return self._counted(
            lambda: super(GatedPasswords, self).verify_sync(password_hash, password)
        )


def with_auth(settings: Settings, **changes: Any) -> Settings:
    """A copy of `settings` with some AuthSettings fields changed."""
    return settings.model_copy(update={"auth": settings.auth.model_copy(update=changes)})


async def wait_until(condition: Callable[[], bool], within: float = 10) -> None:
    """Poll `condition` until it holds; fail after `within` seconds."""
    async with asyncio.timeout(within):
        # Polled, not an asyncio.Event: the condition changes in other threads.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- PostgreSQL primary and streaming replicas (fastpost.cluster.postgres) ---------------


@dataclass
class PgCluster:
    primary: PgNode
    replicas: list[PgNode]
    state_dir: Path


@contextmanager
def postgres_cluster(
    apply_delays: Sequence[str | None] = (None,), *, settings: Mapping[str, str] | None = None
) -> Iterator[PgCluster]:
    """A running primary and one streaming replica per entry of `apply_delays` (None: no
    recovery_min_apply_delay), under a temporary folder; all stopped and removed after.
    `settings`: the primary's extra postgresql.conf lines, such as
    {"shared_preload_libraries": "'pg_stat_statements'"}.

    The folder is made with mkdtemp under the system's temporary folder, not pytest's
    tmp_path: as root the servers run as the `postgres` OS user, who cannot enter the
    private folders pytest makes."""
    import shutil
    import tempfile

    from fastpost.cluster import postgres

    state_dir = Path(tempfile.mkdtemp(prefix="fastpost-pg-"))
    nodes: list[PgNode] = []
    try:
        primary = postgres.init_primary(state_dir, port=free_port(), settings=settings)
        nodes.append(primary)
        postgres.start(primary)
        replicas = []
        for n, delay in enumerate(apply_delays, start=1):
            replica = postgres.init_replica(
                primary, state_dir, port=free_port(), name=f"replica-{n}", apply_delay=delay
            )
            nodes.append(replica)
            postgres.start(replica)
            replicas.append(replica)
        yield PgCluster(primary, replicas, state_dir)
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                postgres.stop(node, mode="immediate")
        shutil.rmtree(state_dir, ignore_errors=True)


def postgres_missing_reason() -> str | None:
    """Why PostgreSQL-server tests cannot run here (its binaries are missing), or None."""
    from fastpost.cluster.postgres import PostgresMissing, pg_bindir

    try:
        pg_bindir()
    except PostgresMissing as exc:
        return str(exc)
    return None


@contextmanager
def route_server() -> Iterator[str]:
    """Run tests/bench/route_server.py (answers by path, sends X-Request-ID back) on a free
    port; yield its base URL; stop it on the way out."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "bench" / "route_server.py"), str(port)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.stdout is not None:
            process.stdout.close()
        stop_group(process)


# --- The `fastpost` command in real processes ------------------------------------------

# Argon2 at its cheapest: the seed and every login or registration hash a password. No rate
# limits: the tests' clients log in and write from one address, faster than any person.
FAST_ENV = {
    "FASTPOST_AUTH__ARGON2_TIME_COST": "1",
    "FASTPOST_AUTH__ARGON2_MEMORY_COST_KIB": "8",
    "FASTPOST_AUTH__ARGON2_PARALLELISM": "1",
    "FASTPOST_RATE_LIMITS__ENABLED": "false",
}


def fastpost(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `fastpost ARGS` to its end in a process of its own; its output is captured."""
    return subprocess.run(
        [sys.executable, "-m", "fastpost.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def environment(tmp_path: Path) -> dict[str, str]:
    """This process's environment without its FASTPOST_ settings, plus a SQLite database and
    a data folder under `tmp_path`, and cheap password hashing."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
        **FAST_ENV,
        "FASTPOST_DB__URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'fastpost.db'}",
        "FASTPOST_DATA_DIR": str(tmp_path / "data"),
    }


def migrate_and_seed(env: dict[str, str], cwd: Path, *seed_args: str) -> None:
    """`fastpost db upgrade`, then `fastpost seed SEED_ARGS`; both must succeed."""
    upgraded = fastpost("db", "upgrade", env=env, cwd=cwd)
    assert upgraded.returncode == 0, upgraded.stderr
    seeded = fastpost("seed", *seed_args, env=env, cwd=cwd)
    assert seeded.returncode == 0, seeded.stderr


@dataclass
class Serving:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def serve_fastpost(*args: str, env: dict[str, str], cwd: Path) -> Iterator[Serving]:
    """Run `fastpost serve --port PORT ARGS` on a free port in a session of its own, its
    output in `cwd`/server.log; yield it once /health/ready answers; stop it and its workers
    on the way out."""
    port = free_port()
    log_path = cwd / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastpost.cli", "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/health/ready", process, log_path.read_text)
        yield Serving(base, process, log_path)
    finally:
        stop_group(process)


def headless_chromium() -> str | None:
    """The path of a headless Chromium from the system's packages (.ci/run installs one),
    or None."""
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on a fresh connection: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- The machine's Redis (127.0.0.1:6379) ---------------------------------------------------

# Under pytest-xdist each worker runs its tests beside the others': a test that empties a
# Redis database or counts its keys must not see another worker's. Each worker has a set of
# databases of its own: the first (gw0, or a run without xdist) the numbers the tests name
# (11 to 15), the next those numbers less REDIS_DATABASES_PER_WORKER, and so on.
REDIS_DATABASES_PER_WORKER = 5


def local_redis_url(database: int) -> str:
    """The URL of database `database` of the machine's Redis, as this test process sees it
    (its xdist worker's own, see REDIS_DATABASES_PER_WORKER)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    own = database - REDIS_DATABASES_PER_WORKER * worker
    assert own >= 0, f"too many xdist workers for Redis database {database}"
    return f"redis://127.0.0.1:6379/{own}"


# --- A Redis Cluster of the test's own (fastpost.redis_client, fastpost.cache) -----------


@dataclass
class RedisClusterNodes:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        """The cluster as FASTPOST_REDIS_URL names it: every node listed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def flush(self) -> None:
        """Empty every node, for the next test."""
        import redis

        for port in self.ports:
            with redis.Redis(port=port) as client:
                client.flushall()


def redis_cluster_missing_reason() -> str | None:
    """Why a Redis Cluster cannot be started here (redis-server < 7 has no sharded pub/sub),
    or None."""
    import shutil

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "redis-server and redis-cli are not installed"
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    major = version.partition(" v=")[2].partition(".")[0]
    if not major.isdigit() or int(major) < 7:
        return f"Redis Cluster tests need redis-server >= 7: {version.strip()}"
    return None


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[RedisClusterNodes]:
    """A Redis Cluster of `masters` primaries, no replicas, on free loopback ports, its
    files under `directory`; yielded once every node says `cluster_state:ok`, stopped after."""
    import time

    import redis

    ports = [free_port() for _ in range(masters)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True)
            processes.append(
                subprocess.Popen(
                    [
                        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                        # The bus port is port + 10000 unless said: past 65535 for the
                        # high ports free_port hands out.
                        "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                        "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                        "--save", "", "--appendonly", "no", "--dir", str(node_dir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        clients = [redis.Redis(port=port, socket_connect_timeout=0.5) for port in ports]
        deadline = time.monotonic() + 20
        for client in clients:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        for client in clients:
            while client.cluster("INFO").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the Redis Cluster did not form"
                time.sleep(0.05)
            client.close()
        yield RedisClusterNodes(ports, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class _Stored:
    response: httpx.Response
    stored_at: float
    vary: dict[str, str | None]


class CachingClient:
    """GETs through an HTTP cache that follows RFC 9111, as a browser's (private) or a
    CDN's (shared) does, over `client`: what a real client of the API would show.

    A stored response is used without asking while fresh (s-maxage for a shared cache,
    max-age, Expires, or the 10% of its age since Last-Modified that browsers allow
    themselves, RFC 9111 4.2.2), unless it says no-cache; otherwise it is revalidated with
    its validators, and a 304 serves the stored body. `source` says where the last answer
    came from: "cache", "revalidated" or "network".
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        shared: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.shared = shared
        self.clock = clock or time.time
        self.source = ""
        self._stored: dict[str, _Stored] = {}

    async def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = dict(headers or {})
        stored = self._stored.get(url)
        if stored is not None and not self._matches_vary(stored, headers):
            stored = None
        if stored is not None:
            directives = cache_directives(stored.response)
            if "no-cache" not in directives and self._age(stored) < self._lifetime(stored):
                self.source = "cache"
                return stored.response
            etag = stored.response.headers.get("etag")
            last_modified = stored.response.headers.get("last-modified")
            if etag:
                headers["If-None-Match"] = etag
            elif last_modified:
                headers["If-Modified-Since"] = last_modified
        response = await self.client.get(url, headers=headers)
        if response.status_code == 304 and stored is not None:
            self.source = "revalidated"
            stored.stored_at = self.clock()
            return stored.response
        self.source = "network"
        if response.status_code == 200 and self._may_store(response, headers):
            names = [
                name.strip().lower()
                for name in response.headers.get("vary", "").split(",")
                if name.strip()
            ]
            vary = {name: _header(headers, name) for name in names}
            self._stored[url] = _Stored(response, self.clock(), vary)
        else:
            self._stored.pop(url, None)
        return response

    def _may_store(self, response: httpx.Response, request_headers: dict[str, str]) -> bool:
        directives = cache_directives(response)
        if "no-store" in directives:
            return False
        if self.shared:
            if "private" in directives:
                return False
            # RFC 9111 3.5: a shared cache stores an answer to an authorised request only
            # when the response allows it explicitly.
            if _header(request_headers, "authorization") is not None and not (
                {"public", "s-maxage", "must-revalidate"} & directives.keys()
            ):
                return False
        return True

    def _matches_vary(self, stored: _Stored, headers: dict[str, str]) -> bool:
        return all(_header(headers, name) == value for name, value in stored.vary.items())

    def _age(self, stored: _Stored) -> float:
        return self.clock() - stored.stored_at

    def _lifetime(self, stored: _Stored) -> float:
        response = stored.response
        directives = cache_directives(response)
        for name in ("s-maxage", "max-age") if self.shared else ("max-age",):
            value = directives.get(name)
            if value is not None and value.isdigit():
                return float(value)
        date = _http_time(response.headers.get("date")) or stored.stored_at
        expires = _http_time(response.headers.get("expires"))
        if expires is not None:
            return expires - date
        last_modified = _http_time(response.headers.get("last-modified"))
        if last_modified is not None:
            return max(date - last_modified, 0) / 10
        return 0.0


def cache_directives(response: httpx.Response) -> dict[str, str | None]:
    """A response's Cache-Control directives, names in lower case: {"max-age": "5", ...}."""
    directives: dict[str, str | None] = {}
    for part in response.headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip('"') if value else None
    return directives


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


# --- sharded mode (fastpost.shards) ---------------------------------------------------------


def databases_of(app: FastAPI) -> Sequence[Database]:
    """Every database an app stores rows on: its one, or in sharded mode each shard."""
    shards = getattr(app.state, "shards", None)
    return [app.state.db] if shards is None else shards.databases


def database_of(app: FastAPI, row_id: int) -> Database:
    """The database that holds a user or a post (in sharded mode, its shard's)."""
    shards = getattr(app.state, "shards", None)
    found: Database = app.state.db if shards is None else shards.for_id(row_id)
    return found


# The PostgreSQL server the tests may use (a role that may create databases), or None.
TEST_POSTGRES_URL = os.environ.get("FASTPOST_TEST_POSTGRES_URL")


def postgres_url(database: str) -> str:
    """The asyncpg URL of a database on the tests' PostgreSQL server."""
    assert TEST_POSTGRES_URL
    url = make_url(TEST_POSTGRES_URL)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+asyncpg")
    return url.set(database=database).render_as_string(hide_password=False)


async def admin_execute(sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on the tests' server."""
    engine = create_async_engine(
        postgres_url(make_url(TEST_POSTGRES_URL or "").database or "postgres"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@asynccontextmanager
async def scratch_databases(prefix: str, count: int) -> AsyncIterator[list[str]]:
    """`count` new, empty databases named `prefix_0` ... on the tests' server, dropped at
    the end; their URLs."""
    names = [f"{prefix}_{n}" for n in range(count)]
    try:
        for name in names:
            await admin_execute(f'CREATE DATABASE "{name}"')
        yield [postgres_url(name) for name in names]
    finally:
        for name in names:
            await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
