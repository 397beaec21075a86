"""The fault suite's machinery: the processes (FaultLab), the load (generate), the faults
(SCENARIOS) and the table (Row).

The load generator speaks HTTP/1.1 on raw asyncio streams, one persistent connection per
client: a thousand connections cost it little, and it sees what a client sees, a connection
the server closed included (httpx would reconnect quietly).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from fastpost.cluster import postgres
from fastpost.cluster import redis as redis_server
from fastpost.cluster.postgres import PgNode
from fastpost.cluster.processes import free_port
from tests.helpers import Serving, environment, migrate_and_seed, postgres_cluster, serve_fastpost

clock = time.monotonic
# A request unanswered after this counts as hung (a failure of its own kind).
REQUEST_TIMEOUT_SECONDS = 30.0
# Redis restarted: by then fastpost must be keeping entries in it again.
CACHE_BACK_WITHIN_SECONDS = 15.0
# Answers that count as served.
OK = frozenset({200, 201, 304})
# The seeded account the load writes and reads its feed as (fastpost.seed).
USERNAME, PASSWORD = "testuser", "testpass"


@dataclass(frozen=True)
class Profile:
    """How hard and how long: CI's short run, or the long one for the closing note."""

    seconds: float  # how long a fault lasts (the database stopped, frozen; Redis down)
    warm_seconds: float  # load before the fault
    after_seconds: float  # load after it ends: time to recover, and to see that it did
    clients: int  # connections of the mixed load, each with one request in flight
    pause: float  # each client's pause between requests (a steady load, not a flood)
    overload_connections: int  # on the costliest route, no pause
    # Server settings: None keeps fastpost's defaults.
    timeout_seconds: float | None  # connect, statement and pool-wait timeouts
    max_requests_in_flight: int | None


CI = Profile(
    seconds=2.0,
    warm_seconds=1.0,
    after_seconds=3.0,
    clients=8,
    pause=0.005,
    overload_connections=200,
    timeout_seconds=1.0,
    # Low enough that CI's 200 connections pass it (100 a worker), as 1,000 pass 256.
    max_requests_in_flight=32,
)
LONG = Profile(
    seconds=10.0,
    warm_seconds=3.0,
    after_seconds=10.0,
    clients=32,
    pause=0.0,
    overload_connections=1000,
    timeout_seconds=None,
    max_requests_in_flight=None,
)


# --- The processes ------------------------------------------------------------------------


@dataclass
class FaultLab:
    """A PostgreSQL and a Redis of our own, fastpost on them with 2 workers, seeded."""

    work: Path
    node: PgNode
    redis_port: int
    redis_pid: int
    serving: Serving
    token: str
    post_ids: list[int]
    rows: list[Row] = field(default_factory=list)  # the table so far

    @property
    def base(self) -> str:
        return self.serving.base

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        self.redis_pid = redis_server.start(
            self.work / "redis", port=self.redis_port, log_file=self.work / "redis.log"
        )
        deadline = clock() + 10
        while not redis_server.is_up(self.redis_port):
            if clock() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def kill_redis(self) -> None:
        os.kill(self.redis_pid, signal.SIGKILL)
        with suppress(*_gone()):
            os.waitpid(self.redis_pid, 0)

    def workers(self) -> list[int]:
        """The pids of fastpost's worker processes (children of the `serve` process)."""
        import psutil

        found = []
        for child in psutil.Process(self.serving.process.pid).children():
            with suppress(*_gone()):  # a worker just killed is a zombie for a moment
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child.pid)
        return found

    def workers_rss_mib(self) -> float:
        import psutil

        total = 0
        for pid in self.workers():
            with suppress(*_gone()):
                total += psutil.Process(pid).memory_info().rss
        return total / 2**20

    def server_log(self) -> str:
        return self.serving.log_path.read_text(errors="replace")


def _gone() -> tuple[type[Exception], ...]:
    """What asking about a process that has just exited raises."""
    import psutil

    return (ChildProcessError, ProcessLookupError, psutil.Error)


@contextmanager
def fault_lab(work: Path, profile: Profile) -> Iterator[FaultLab]:
    """Start everything under `work`; stop and remove it all on the way out."""
    with ExitStack() as stack:
        cluster = stack.enter_context(postgres_cluster(apply_delays=()))
        node = cluster.primary
        # Before the cluster stops it: a server left frozen (a run cut short) ignores pg_ctl.
        stack.callback(lambda: node.pid() is not None and postgres.thaw(node))
        redis_port = free_port()
        lab_redis_dir = work / "redis"
        lab: FaultLab | None = None
        pid = redis_server.start(lab_redis_dir, port=redis_port, log_file=work / "redis.log")
        # The lab's pid when it has one: a scenario restarts Redis under a new pid.
        stack.callback(lambda: redis_server.stop(lab.redis_pid if lab else pid))
        env = {
            **environment(work),
            "FASTPOST_ENV": "production",
            "FASTPOST_AUTH__SECRET_KEY": "f" * 48,
            "FASTPOST_DB__URL": node.url(driver="postgresql+asyncpg"),
            "FASTPOST_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
            # One client address sends everything: limits per address would refuse it.
            "FASTPOST_RATE_LIMITS__ENABLED": "false",
        }
        if profile.timeout_seconds is not None:
            for name in ("CONNECT_TIMEOUT", "STATEMENT_TIMEOUT", "POOL_TIMEOUT"):
                env[f"FASTPOST_DB__{name}"] = str(profile.timeout_seconds)
        if profile.max_requests_in_flight is not None:
            env["FASTPOST_API__MAX_REQUESTS_IN_FLIGHT"] = str(profile.max_requests_in_flight)
        migrate_and_seed(env, work, "--users", "50", "--posts", "500", "--follows", "500")
        serving = stack.enter_context(serve_fastpost("--workers", "2", env=env, cwd=work))
        login = httpx.post(
            f"{serving.base}/auth/login", json={"username": USERNAME, "password": PASSWORD}
        )
        login.raise_for_status()
        page = httpx.get(f"{serving.base}/posts/", params={"limit": 10}).json()
        lab = FaultLab(
            work=work,
            node=node,
            redis_port=redis_port,
            redis_pid=pid,
            serving=serving,
            token=login.json()["access_token"],
            post_ids=[item["id"] for item in page["items"]],
        )
        yield lab


# --- The load -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str  # "cached", "read", "write", "feed"
    started: float  # clock()
    seconds: float
    status: int  # 0: no answer (see error)
    error: str = ""  # "reset", "refused", "hung", "503 without Retry-After"
    closed: bool = False  # the server closed the connection after answering
    title: str | None = None  # a write's

    @property
    def ok(self) -> bool:
        return self.status in OK and not self.error


@dataclass
class Request:
    kind: str
    raw: bytes
    title: str | None = None


def encode(method: str, path: str, *, token: str | None = None, body: object = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class _Connection:
    """One persistent HTTP/1.1 connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, raw: bytes) -> tuple[int, dict[bytes, bytes]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].split(b"\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.read()
            headers[b"connection"] = b"close"
        return status, headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def generate(
    base: str,
    next_request: Callable[[int, int], Request],
    *,
    clients: int,
    pause: float,
    until: asyncio.Event,
    outcomes: list[Outcome],
) -> None:
    """Send `next_request(client, n)` from each of `clients` connections, each waiting for
    its answer (and `pause`) before the next, until `until` is set."""
    address = urlsplit(base)
    host, port = address.hostname, address.port
    assert host is not None
    assert port is not None

    async def client(number: int) -> None:
        connection = _Connection(host, port)
        for n in itertools.count():
            if until.is_set():
                break
            request = next_request(number, n)
            started = clock()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    status, headers = await connection.exchange(request.raw)
            except TimeoutError:
                connection.close()
                outcomes.append(Outcome(request.kind, started, clock() - started, 0, "hung"))
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                connection.close()
                error = "refused" if isinstance(exc, ConnectionRefusedError) else "reset"
                outcomes.append(Outcome(request.kind, started, clock() - started, 0, error))
                await asyncio.sleep(0.01)  # a refused port refuses at once: don't spin
                continue
            closed = headers.get(b"connection") == b"close"
            if closed:
                connection.close()
            error = ""
            if status == 503 and b"retry-after" not in headers:
                error = "503 without Retry-After"
            outcomes.append(
                Outcome(
                    request.kind,
                    started,
                    clock() - started,
                    status,
                    error,
                    closed,
                    request.title,
                )
            )
            if pause:
                await asyncio.sleep(pause)
        connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))


def mixed_load(lab: FaultLab, scenario: str) -> Callable[[int, int], Request]:
    """Anonymous post reads (the cache answers them), feed reads (the database does every
    time) and writes (new posts, each with a title of its own), in the ratio 2:2:1."""
    cached = [encode("GET", f"/posts/{post_id}") for post_id in lab.post_ids]
    feed = encode("GET", "/feed?limit=10", token=lab.token)
    writes = itertools.count()
    slug = scenario.replace(" ", "-")

    def next_request(client: int, n: int) -> Request:
        kind = ("cached", "read", "write", "cached", "read")[(client + n) % 5]
        if kind == "cached":
            return Request(kind, cached[(client + n) % len(cached)])
        if kind == "read":
            return Request(kind, feed)
        title = f"fault {slug} {next(writes)}"
        body = {"title": title, "content": "written under a fault", "status": "published"}
        return Request(kind, encode("POST", "/posts/", token=lab.token, body=body), title)

    return next_request


def feed_flood(lab: FaultLab) -> Callable[[int, int], Request]:
    """The costliest route a client can ask for again and again: a feed, uncached."""
    feed = Request("feed", encode("GET", "/feed?limit=20", token=lab.token))
    return lambda client, n: feed


# --- The faults ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one scenario did: its outcomes, and when its fault began and ended."""

    scenario: str
    outcomes: list[Outcome]
    fault_started: float
    fault_ended: float
    load_ended: float
    flood: bool = False  # an overload: failing to the end is the point, no recovery to time
    notes: list[str] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)  # what a fault measured itself
    stored: dict[str, int] = field(default_factory=dict)  # title -> rows with it

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def failures_by_kind(self, kind: str) -> list[Outcome]:
        return [o for o in self.failures if o.kind == kind]

    @property
    def acknowledged(self) -> set[str]:
        return {o.title for o in self.outcomes if o.title and o.status == 201}

    @property
    def recovery_seconds(self) -> float | None:
        """From the fault's end to the end of the last failed request: None when requests
        were still failing as the load ended (not recovered)."""
        if not self.failures:
            return 0.0
        last = max(o.started + o.seconds for o in self.failures)
        if last > self.load_ended - 0.5:
            return None
        return max(0.0, last - self.fault_ended)

    def row(self) -> Row:
        served = sorted(o.seconds for o in self.outcomes if o.ok)
        counts = Counter(o.error or str(o.status) for o in self.failures)
        twice = sum(1 for count in self.stored.values() if count > 1)
        acknowledged = self.acknowledged
        lost = len(acknowledged - self.stored.keys())
        extra = len(self.stored.keys() - acknowledged)
        return Row(
            scenario=self.scenario,
            requests=len(self.outcomes),
            failures=", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items())) or "0",
            p99_ms=_percentile(served, 0.99) * 1000 if served else math.nan,
            recovery="-" if self.flood else _seconds(self.recovery_seconds),
            writes=f"{len(acknowledged):,} / {len(self.stored):,}"
            + (f" ({lost} lost)" if lost else "")
            + (f" ({twice} twice)" if twice else "")
            + (f" (+{extra} unacknowledged)" if extra else ""),
            notes="; ".join(self.notes),
        )


def _seconds(value: float | None) -> str:
    return "not recovered" if value is None else f"{value:.1f} s"


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Fault = Callable[[FaultLab, Profile, Run], Awaitable[None]]


async def _db_stopped(lab: FaultLab, profile: Profile, run: Run) -> None:
    await asyncio.to_thread(postgres.stop, lab.node, mode="fast")
    await asyncio.sleep(profile.seconds)
    await asyncio.to_thread(postgres.start, lab.node)


async def _db_frozen(lab: FaultLab, profile: Profile, run: Run) -> None:
    postgres.freeze(lab.node)
    try:
        await asyncio.sleep(profile.seconds)
    finally:
        postgres.thaw(lab.node)


async def _db_restarted(lab: FaultLab, profile: Profile, run: Run) -> None:
    await asyncio.to_thread(postgres.stop, lab.node, mode="fast")
    await asyncio.to_thread(postgres.start, lab.node)


async def _redis_killed(lab: FaultLab, profile: Profile, run: Run) -> None:
    import redis.asyncio as aioredis

    lab.kill_redis()
    await asyncio.sleep(profile.seconds)
    await asyncio.to_thread(lab.start_redis)
    restarted = clock()
    client = aioredis.Redis.from_url(lab.redis_url, socket_timeout=1)
    try:
        # Entries go back to Redis as tier 1's copies expire and are loaded again:
        # fastpost.settings.CacheSettings.local_ttl_seconds (5 s) after the restart at most.
        async with asyncio.timeout(CACHE_BACK_WITHIN_SECONDS):
            while not await client.dbsize():  # noqa: ASYNC110 (another process's state)
                await asyncio.sleep(0.05)
        run.facts["cache_back_seconds"] = clock() - restarted
        run.notes.append(f"cache back in Redis {clock() - restarted:.1f} s after its restart")
    except TimeoutError:
        run.notes.append("cache NOT back in Redis")
    finally:
        await client.aclose()


async def _worker_killed(lab: FaultLab, profile: Profile, run: Run) -> None:
    from tests.helpers import scrape

    before_total = _requests_total(await asyncio.to_thread(scrape, lab.base))
    old = lab.workers()
    os.kill(old[0], signal.SIGKILL)
    killed = clock()
    run.fault_started = run.fault_ended = killed
    async with asyncio.timeout(30):  # the supervisor starts a replacement
        while not (set(lab.workers()) - set(old) and len(lab.workers()) == len(old)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    run.facts["replaced_seconds"] = clock() - killed
    run.notes.append(f"replacement worker up in {clock() - killed:.1f} s")
    await asyncio.sleep(profile.after_seconds / 2)
    after_total = _requests_total(await asyncio.to_thread(scrape, lab.base))
    run.facts["requests_counted_before"] = before_total
    run.facts["requests_counted_after"] = after_total
    run.notes.append(
        f"requests counted {before_total:,.0f} -> {after_total:,.0f}"
        + ("" if after_total >= before_total else " (went BACK)")
    )


def _requests_total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "http_requests_total")


async def _overload(lab: FaultLab, profile: Profile, run: Run) -> None:
    """No fault but the flood itself; the RSS of the workers is sampled while it lasts."""
    before = lab.workers_rss_mib()
    peak = before
    deadline = clock() + profile.seconds
    while clock() < deadline:
        peak = max(peak, lab.workers_rss_mib())
        await asyncio.sleep(0.25)
    run.facts["rss_before_mib"], run.facts["rss_peak_mib"] = before, peak
    run.notes.append(f"workers' RSS {before:.0f} -> peak {peak:.0f} MiB")


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    flood: bool = False  # the overload: many connections on one route, no pause


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("db stopped", _db_stopped),
        Scenario("db frozen", _db_frozen),
        Scenario("db restarted", _db_restarted),
        Scenario("redis killed", _redis_killed),
        Scenario("worker killed", _worker_killed),
        Scenario("overload /feed", _overload, flood=True),
    )
}


async def run_scenario(lab: FaultLab, scenario: Scenario, profile: Profile) -> Run:
    """Load, fault, load after it; then count the writes the database holds."""
    outcomes: list[Outcome] = []
    done = asyncio.Event()
    if scenario.flood:
        next_request, clients, pause = feed_flood(lab), profile.overload_connections, 0.0
    else:
        next_request, clients, pause = (
            mixed_load(lab, scenario.name),
            profile.clients,
            profile.pause,
        )
    load = asyncio.create_task(
        generate(
            lab.base, next_request, clients=clients, pause=pause, until=done, outcomes=outcomes
        )
    )
    run = Run(scenario.name, outcomes, 0.0, 0.0, 0.0, flood=scenario.flood)
    try:
        await asyncio.sleep(profile.warm_seconds)
        run.fault_started = clock()
        await scenario.fault(lab, profile, run)
        if not run.fault_ended:  # an instant fault (a kill) set its own times
            run.fault_ended = clock()
        await asyncio.sleep(profile.after_seconds)
    finally:
        done.set()
        await load
    run.load_ended = clock()
    run.stored = await stored_titles(lab, scenario.name)
    return run


async def stored_titles(lab: FaultLab, scenario: str) -> dict[str, int]:
    import asyncpg

    prefix = f"fault {scenario.replace(' ', '-')} "
    conn = await asyncpg.connect(lab.node.url(), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT title, count(*) AS n FROM posts WHERE starts_with(title, $1) GROUP BY title",
            prefix,
        )
    finally:
        await conn.close()
    return {row["title"]: row["n"] for row in rows}


# --- The table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    scenario: str
    requests: int
    failures: str
    p99_ms: float
    recovery: str
    writes: str
    notes: str

    HEADER = (
        "| scenario | requests | failures (by status) | p99 served | recovery | "
        "writes acknowledged / stored | notes |\n|---|---:|---|---:|---:|---|---|"
    )

    def __str__(self) -> str:
        p99 = "-" if math.isnan(self.p99_ms) else f"{self.p99_ms:,.0f} ms"
        return (
            f"| {self.scenario} | {self.requests:,} | {self.failures} | {p99} | {self.recovery} | "
            f"{self.writes} | {self.notes} |"
        )


def table(rows: list[Row]) -> str:
    return "\n".join([Row.HEADER, *(str(row) for row in rows)])
