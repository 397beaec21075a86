"""A logical shard moves while writes arrive at a fixed rate: the move's time, step by step,
and write latency before, during and after it, with nothing lost (issue 20).

    .venv/bin/python -m benchmarks.bench_shard_move [--posts 64000] [--rate 100] [--json PATH]

What it does, in order:
1. creates `--shards` databases of its own (unique names, dropped at the end) on the local
   PostgreSQL, `fastpost shards init` and `fastpost seed` them (the defaults put 2,000
   posts and 2,000 likes in each of the 32 logical shards on average: users, and their
   posts, go to a logical shard by a hash of the name, so one holds more than another);
2. starts fastpost sharded over them (`--workers` uvicorn workers, each an instance with
   its own view of the shard map, pinned to --server-cpu), announcing map changes on Redis
   unless --no-redis, and logs in `--writers` users on the logical shard that moves and as
   many on others;
3. starts the open-loop generator (fastpost.bench.fixed_rate, pinned to --client-cpu) on a
   list of writes, each one unique: POST /posts/ and POST /posts/{id}/like, `--moving-share`
   of them to the logical shard that moves, at `--rate` per second whatever the server
   does, so that writes held by the freeze show as latency, not as fewer requests;
4. after `--warmup` + `--before` seconds, moves the logical shard to `--to` by the function
   `fastpost shards move LOGICAL --to DATABASE` runs (fastpost.shards.move.move_shard,
   with the settings the servers have), timing each step by the line it says at its end;
5. once the load is over: latency of the writes sent before the move, during it, during its
   freeze (writes to the moving shard wait) and after it, overall and by the shard they
   write to; p99 during / p99 before from the same run; failed requests by type; the
   posts and likes answered 201/200 against the rows found in the databases afterwards
   (lost writes: must be 0); rows of the shard left on its old database.

Latency runs from each request's intended send time (fixed_rate.py says why), and a
request falls in the window its intended send time falls in: "before" ends when the move
starts, "during the move" runs from its first line to its last, "during the freeze" from
the copy's line (the freeze follows at once) to the switch's, "after" from the last line
to the end of the load. The lines are timed on the generator's clock
(CLOCK_MONOTONIC, one for every process: FixedRateResult.started_at). The load lasts
warmup + before + `--move-budget` + after seconds, fixed before the move starts: a move
slower than its budget leaves a shorter "after" window, and the report says so.
Wall-clock figures move with whatever else runs on the machine: compare a run's ratios, and
repeat a run before believing a difference between two.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import URL, make_url

from benchmarks.script import run_script
from fastpost.bench.database import (
    DEFAULT_ADMIN_URL,
    asyncpg_dsn,
    drop_postgres,
    recreate_postgres,
    run_fastpost,
)
from fastpost.bench.fixed_rate import GENERATOR_CPU_LIMIT, FixedRateResult, clock
from fastpost.bench.latency import LatencySummary, Sample, is_error, per_second, summarise
from fastpost.bench.requests_file import HttpRequest, write_requests
from fastpost.bench.servers import ROOT, Server, base_env, pin
from fastpost.ids import shard_of
from fastpost.seed import DEMO_USERNAME, GENERATED_PASSWORD
from fastpost.settings import DatabaseSettings
from fastpost.shards.move import MoveFailed, move_shard

# Wide enough for the latency table on one line each row, also when piped to a file (the
# output is pasted into notes as it is).
console = Console(width=None if sys.stdout.isatty() else 120)

# What the move says first on each step's line (move.py), in order, with what the
# time up to it covers.
STEPS = {
    "copy": "copy (snapshot, rows written)",
    "freeze": "freeze (instances drained)",
    "catch up": "catch up (rows changed since)",
    "verify": "verify (counts, checksums)",
    "switch": "switch (map names the target)",
    "delete": "delete (old copy; all switched)",
}
WINDOWS = ("before", "during the move", "during the freeze", "after")
# Tables of a logical shard by the id that carries it (move.py's TABLES, follows aside).
SHARD_TABLES = (
    ("users", "id"),
    ("posts", "id"),
    ("post_tags", "post_id"),
    ("likes", "post_id"),
    ("comments", "post_id"),
)
# Allowed for the generator's process to start before its schedule does ("before" is
# measured from the samples all the same: a slower start only shortens it).
GENERATOR_START_SECONDS = 1.0
# How long the generator waits for answers after its schedule: past the server's longest
# hold of a write to a frozen shard (shards.router.FREEZE_WAIT_SECONDS).
DRAIN_SECONDS = 15.0
TITLE_PREFIX = "shard move"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--shards", type=int, default=2, help="databases of sharded mode (>= 2)")
    add("--users", type=int, default=2000)
    add("--posts", type=int, default=64000, help="seeded posts (1/32 in each logical shard)")
    add("--likes", type=int, default=64000)
    add("--follows", type=int, default=10000)
    add("--logical", type=int, default=0, help="the logical shard that moves")
    add("--to", type=int, default=None, help="its target database (default: the next one)")
    add("--rate", type=float, default=100.0, help="writes per second, open loop")
    add("--connections", type=int, default=128, help="the generator's connections")
    add("--moving-share", type=float, default=0.5, help="share of writes to the moving shard")
    add("--like-share", type=float, default=0.3, help="share of writes that are likes")
    add("--writers", type=int, default=8, help="logged-in users per group (moving, others)")
    add("--warmup", type=float, default=3.0, help="seconds of load left out of 'before'")
    add("--before", type=float, default=10.0, help="seconds of steady load before the move")
    add("--move-budget", type=float, default=20.0, help="seconds of load given to the move")
    add("--after", type=float, default=10.0, help="seconds of load after the budget")
    add("--workers", type=int, default=2, help="uvicorn workers: instances of the app")
    add("--map-check-seconds", type=float, default=1.0, help="FASTPOST_DB__SHARD_MAP_...")
    add("--redis-url", default="redis://127.0.0.1:6379/12", help="announcements and cache")
    add("--no-redis", action="store_true", help="instances follow the map by polling only")
    add("--database-url", default=DEFAULT_ADMIN_URL, help="a role that creates databases")
    add("--db-name", default="fastpost_bench_move", help="prefix of the databases' names")
    add("--server-cpu", type=int, default=0)
    add("--client-cpu", type=int, default=1)
    add("--no-pin", action="store_true", help="pin neither the server nor the generator")
    add("--json", type=Path)
    args = parser.parse_args(argv)
    if args.shards < 2:
        parser.error("--shards must be at least 2: a move needs another database")
    if not 0 <= args.logical < 32:
        parser.error("--logical is a logical shard, 0 to 31")
    if not (0 <= args.moving_share <= 1 and 0 <= args.like_share <= 1):
        parser.error("--moving-share and --like-share are between 0 and 1")
    return args


# -- the databases ------------------------------------------------------------------------


def shards_setting(urls: Sequence[URL]) -> str:
    """FASTPOST_DB__SHARDS for `urls`."""
    return json.dumps([url.render_as_string(hide_password=False) for url in urls])


def create_databases(args: argparse.Namespace) -> list[URL]:
    """Create `args.shards` empty databases with names no other run uses."""
    admin = make_url(args.database_url)
    if not admin.drivername.startswith("postgresql"):
        raise SystemExit("--database-url must be a PostgreSQL URL")
    prefix = f"{args.db_name}_{secrets.token_hex(4)}"
    urls = []
    for n in range(args.shards):
        url = admin.set(drivername="postgresql+asyncpg", database=f"{prefix}_{n}")
        asyncio.run(recreate_postgres(asyncpg_dsn(admin), f"{prefix}_{n}"))
        urls.append(url)
    return urls


def seed(args: argparse.Namespace, env: dict[str, str]) -> float:
    """`fastpost shards init` and `fastpost seed`; return the seconds the seed took."""
    run_fastpost(env, "shards", "init")
    started = time.monotonic()
    sizes = ("users", "posts", "likes", "follows")
    run_fastpost(env, "seed", *(part for n in sizes for part in (f"--{n}", str(getattr(args, n)))))
    return time.monotonic() - started


async def _fetch(url: URL, sql: str, *params: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


async def _shard_map(urls: Sequence[URL]) -> list[int]:
    """The database of each logical shard, as the map on the directory (the first) says."""
    rows = await _fetch(urls[0], "SELECT logical, database FROM shard_map ORDER BY logical")
    return [int(r["database"]) for r in rows]


async def _shard_rows(url: URL, logical: int) -> dict[str, int]:
    """Rows of a logical shard on one database, per table."""
    found = {}
    for table, column in SHARD_TABLES:
        rows = await _fetch(url, f"SELECT count(*) FROM {table} WHERE {column} >> 48 = $1", logical)
        found[table] = int(rows[0][0])
    return found


# -- the load -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One request of the list: what it writes and to which logical shard."""

    kind: str  # "post" or "like"
    moving: bool  # to the logical shard that moves
    database: int  # where the map put the written row's logical shard before the move
    user_id: int
    post_id: int = 0  # a like's post


@dataclass
class Load:
    writes: list[Write]
    requests: list[HttpRequest]
    marker: str  # every post's title starts with it
    tokens: dict[int, str] = field(default_factory=dict)


def plan(args: argparse.Namespace, total: int) -> list[tuple[str, bool]]:
    """(kind, to the moving shard) of each of `total` writes, drawn with a fixed seed."""
    rng = random.Random(20)
    return [
        ("like" if rng.random() < args.like_share else "post", rng.random() < args.moving_share)
        for _ in range(total)
    ]


async def _writers(
    urls: Sequence[URL], logical: int, source: int, count: int
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Seeded users on the moving logical shard, and as many on the others."""
    movers = await _fetch(
        urls[source],
        "SELECT id, username FROM users WHERE id >> 48 = $1 AND username <> $2 ORDER BY id "
        "LIMIT $3",
        logical,
        DEMO_USERNAME,
        count,
    )
    others: list[asyncpg.Record] = []
    for url in urls:
        others += await _fetch(
            url,
            "SELECT id, username FROM users WHERE id >> 48 <> $1 AND username <> $2 "
            "ORDER BY id LIMIT $3",
            logical,
            DEMO_USERNAME,
            math.ceil(count / len(urls)),
        )
    if not movers:
        raise RuntimeError(f"logical shard {logical} holds no seeded user: raise --users")
    return movers, others[:count]


async def _like_pairs(
    urls: Sequence[URL], logical: int, moving: bool, users: Sequence[int], needed: int
) -> list[tuple[int, int]]:
    """`needed` (user, post) pairs, none liked yet: posts of the moving logical shard, or of
    the others; each acknowledged like must then be found as a row."""
    if not needed:
        return []
    per_user = math.ceil(needed / len(users)) * 2 + 10
    condition = "=" if moving else "<>"
    posts: list[int] = []
    for url in urls:
        rows = await _fetch(
            url,
            f"SELECT id FROM posts WHERE id >> 48 {condition} $1 AND status = 'published' "
            "ORDER BY id LIMIT $2",
            logical,
            per_user,
        )
        posts += [int(r["id"]) for r in rows]
    liked: set[tuple[int, int]] = set()
    for url in urls:
        rows = await _fetch(
            url, "SELECT user_id, post_id FROM likes WHERE user_id = ANY($1)", list(users)
        )
        liked |= {(int(r["user_id"]), int(r["post_id"])) for r in rows}
    pairs = [(u, p) for p in posts for u in users if (u, p) not in liked]
    # Shuffled: consecutive likes fall on different posts, as a crowd's do, rather than
    # queueing on one post's counter.
    random.Random(moving).shuffle(pairs)
    if len(pairs) < needed:
        raise RuntimeError(
            f"{needed} new likes wanted, only {len(pairs)} possible: seed more posts or "
            "lower --like-share"
        )
    return pairs[:needed]


def log_in(base_url: str, usernames: dict[int, str]) -> dict[int, str]:
    """Log every user in (seeded password); return their Authorization headers by id."""
    tokens = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for user_id, username in usernames.items():
            answer = client.post(
                "/auth/login", json={"username": username, "password": GENERATED_PASSWORD}
            )
            answer.raise_for_status()
            tokens[user_id] = f"Bearer {answer.json()['access_token']}"
    return tokens


def _post_request(marker: str, n: int, authorization: str) -> HttpRequest:
    body: dict[str, Any] = {
        "title": f"{marker} {n}",
        "content": "Written while a logical shard moves. " * 4,
    }
    if n % 4 == 0:
        body["tags"] = ["shardmove"]  # some post_tags rows among the writes, too
    return HttpRequest("POST", "/posts/", authorization, json.dumps(body))


def build_load(
    args: argparse.Namespace, urls: Sequence[URL], databases: list[int], base_url: str, total: int
) -> Load:
    """The request list: `total` writes, each unique, so the list is walked once."""
    source = databases[args.logical]
    movers, others = asyncio.run(_writers(urls, args.logical, source, args.writers))
    usernames = {int(r["id"]): str(r["username"]) for r in [*movers, *others]}
    tokens = log_in(base_url, usernames)
    kinds = plan(args, total)
    everyone = list(usernames)
    pairs = {
        moving: iter(
            asyncio.run(
                _like_pairs(
                    urls,
                    args.logical,
                    moving,
                    everyone,
                    sum(1 for kind, m in kinds if kind == "like" and m == moving),
                )
            )
        )
        for moving in (True, False)
    }
    authors = {
        True: itertools.cycle(int(r["id"]) for r in movers),
        False: itertools.cycle(int(r["id"]) for r in others),
    }
    marker = f"{TITLE_PREFIX} {secrets.token_hex(4)}"
    writes: list[Write] = []
    requests: list[HttpRequest] = []
    for n, (kind, moving) in enumerate(kinds):
        if kind == "like":
            user_id, post_id = next(pairs[moving])
            writes.append(Write("like", moving, databases[shard_of(post_id)], user_id, post_id))
            requests.append(HttpRequest("POST", f"/posts/{post_id}/like", tokens[user_id]))
        else:
            user_id = next(authors[moving])
            writes.append(Write("post", moving, databases[shard_of(user_id)], user_id))
            requests.append(_post_request(marker, n, tokens[user_id]))
    return Load(writes, requests, marker, tokens)


def preflight(base_url: str, load: Load) -> None:
    """One post by a user of each group, outside the list: the writes answer 201."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for moving in (True, False):
            write = next((w for w in load.writes if w.moving == moving), None)
            if write is None:
                continue
            answer = client.post(
                "/posts/",
                json={"title": "preflight", "content": "x"},
                headers={"Authorization": load.tokens[write.user_id]},
            )
            if answer.status_code != 201:
                raise RuntimeError(f"POST /posts/ answered {answer.status_code}: {answer.text}")


# -- the move -----------------------------------------------------------------------------


@dataclass
class Move:
    started_at: float
    ended_at: float = 0.0
    error: str = ""  # why the move failed, if it did
    lines: list[tuple[float, str]] = field(default_factory=list)

    def at(self, step: str) -> float | None:
        """When the line of `step` came (the step had then ended)."""
        return next((t for t, line in self.lines if line.split(":")[0] == step), None)

    @property
    def began_at(self) -> float:
        """The first line (the map read, the move about to start)."""
        return self.lines[0][0] if self.lines else self.started_at

    @property
    def finished_at(self) -> float:
        deleted = self.at("delete")
        return self.ended_at if deleted is None else deleted

    @property
    def freeze(self) -> tuple[float, float] | None:
        """From the copy's line (the freeze follows at once) to the switch's."""
        start, end = self.at("copy"), self.at("switch")
        return (start, end) if start is not None and end is not None else None

    def reported(self, pattern: str) -> float | None:
        """A figure the move said (`writes waited (X) s`, `moved in (X) s`)."""
        for _, line in self.lines:
            found = re.search(pattern, line)
            if found:
                return float(found.group(1))
        return None


def run_move(
    args: argparse.Namespace, urls: Sequence[URL], redis_url: str | None, target: int
) -> Move:
    """Move the logical shard as `fastpost shards move` does (its function, with the
    settings the command would read), timing each line it says as it says it.

    In this process rather than the command's own: its start-up (imports, several seconds
    on a busy machine) would take the load's time and tell nothing about the move."""
    settings = DatabaseSettings(
        url=urls[0].render_as_string(hide_password=False),
        shards=[url.render_as_string(hide_password=False) for url in urls],
        shard_map_check_seconds=args.map_check_seconds,
    )
    move = Move(started_at=clock())

    def say(line: str) -> None:
        move.lines.append((clock(), line))
        console.print(f"  [dim]move:[/dim] {line}", highlight=False)

    try:
        asyncio.run(move_shard(settings, args.logical, target, redis_url=redis_url, say=say))
    except (MoveFailed, TimeoutError) as exc:
        move.error = f"{exc.__class__.__name__}: {exc}"
    move.ended_at = clock()
    return move


def step_bounds(move: Move) -> dict[str, tuple[float, float]]:
    """Each step's [start, end): from the line before it to its own (the map read first)."""
    bounds = {"start (map read)": (move.started_at, move.began_at)}
    previous = move.began_at
    for step, what in STEPS.items():
        at = move.at(step)
        if at is None:
            continue
        bounds[what] = (previous, at)
        previous = at
    return bounds


class CpuSampler:
    """The server's CPU time (all its processes), sampled on the shared clock by a thread:
    CPU per write is far steadier than wall-clock latency on a machine others share, and
    a core near 100% busy says the server itself, not the move, set the latency."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def _take(self) -> None:
        self.samples.append((clock(), self.server.cpu_seconds()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def at(self, when: float) -> float:
        """CPU seconds used by `when`, interpolated between the samples around it."""
        times = [t for t, _ in self.samples]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return self.samples[0][1]
        if i == len(times):
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1

    def between(self, low: float, high: float) -> float:
        return self.at(high) - self.at(low)


# -- the report ---------------------------------------------------------------------------


def _summary(samples: Sequence[Sample]) -> dict[str, Any]:
    found: LatencySummary = summarise(samples)
    figures = {
        "p50_ms": found.p50_ms,
        "p95_ms": found.p95_ms,
        "p99_ms": found.p99_ms,
        "max_ms": found.max_ms,
    }
    # None, not NaN, for a window without requests: the JSON stays JSON.
    return {
        "count": found.count,
        "errors": found.errors,
        **{name: None if math.isnan(value) else value for name, value in figures.items()},
    }


def _failure(sample: Sample) -> str:
    """A failed request's type: its status, or how its connection failed."""
    return f"status {sample.status}" if sample.status else (sample.error or "no answer")


def window_bounds(
    args: argparse.Namespace, result: FixedRateResult, move: Move
) -> dict[str, tuple[float, float]]:
    """Each window's [start, end) on the shared clock, by intended send time."""
    start = result.started_at
    end = start + result.duration_s
    bounds = {
        "before": (start + args.warmup, move.started_at),
        "during the move": (move.began_at, move.finished_at),
        "after": (move.finished_at, end),
    }
    if move.freeze is not None:
        bounds["during the freeze"] = move.freeze
    return {name: bounds[name] for name in WINDOWS if name in bounds}


def within_load(
    bounds: dict[str, tuple[float, float]], result: FixedRateResult
) -> dict[str, tuple[float, float]]:
    """The windows cut to the load's schedule (one the load did not reach is empty)."""
    start, end = result.started_at, result.started_at + result.duration_s
    clipped = {}
    for name, window in bounds.items():
        low, high = (min(max(t, start), end) for t in window)
        clipped[name] = (low, max(low, high))
    return clipped


def write_groups(source: int, target: int, physical: int) -> dict[str, Callable[[Write], bool]]:
    """The writes each table row covers: all; those to the moving shard; those to other
    logical shards by database (the move writes on the source and the target)."""
    groups: dict[str, Callable[[Write], bool]] = {
        "all writes": lambda w: True,
        "moving shard": lambda w: w.moving,
        "others, source db": lambda w: not w.moving and w.database == source,
        "others, target db": lambda w: not w.moving and w.database == target,
    }
    if physical > 2:
        groups["others, other dbs"] = lambda w: not w.moving and w.database not in (source, target)
    return groups


def latency_windows(
    bounds: dict[str, tuple[float, float]],
    result: FixedRateResult,
    writes: Sequence[Write],
    groups: dict[str, Callable[[Write], bool]],
    cpu: CpuSampler,
) -> dict[str, dict[str, Any]]:
    """Latency and failures per window, for all writes and by the shard they write to;
    the server's CPU per write sent in the window and its share of one core."""
    windows: dict[str, dict[str, Any]] = {}
    for name, (low, high) in bounds.items():
        inside = [
            (sample, write)
            for sample, write in zip(result.samples, writes, strict=False)
            if low <= result.started_at + sample.intended_s < high
        ]
        failures = Counter(
            f"{sample.route} {_failure(sample)}" for sample, _ in inside if is_error(sample.status)
        )
        used = cpu.between(low, high)
        windows[name] = {
            "seconds": high - low,
            "server_cpu_ms_per_write": used * 1000 / len(inside) if inside else None,
            "server_cpu_share": used / (high - low) if high > low else None,
            "groups": {
                group: _summary([s for s, w in inside if belongs(w)])
                for group, belongs in groups.items()
            },
            "failures": dict(sorted(failures.items())),
        }
    return windows


async def _found(urls: Sequence[URL], load: Load) -> tuple[Counter[int], set[tuple[int, int]]]:
    """The list's posts found (how many rows each) and its users' likes, on every database."""
    posts: Counter[int] = Counter()
    likes: set[tuple[int, int]] = set()
    users = sorted(load.tokens)
    for url in urls:
        rows = await _fetch(
            url, "SELECT title FROM posts WHERE starts_with(title, $1)", load.marker + " "
        )
        posts.update(int(str(r["title"]).rsplit(" ", 1)[1]) for r in rows)
        rows = await _fetch(
            url, "SELECT user_id, post_id FROM likes WHERE user_id = ANY($1)", users
        )
        likes |= {(int(r["user_id"]), int(r["post_id"])) for r in rows}
    return posts, likes


def check_writes(urls: Sequence[URL], load: Load, result: FixedRateResult) -> dict[str, int]:
    """Acknowledged writes against the rows found afterwards."""
    posts, likes = asyncio.run(_found(urls, load))
    acknowledged_posts: set[int] = set()
    acknowledged_likes: set[tuple[int, int]] = set()
    unacknowledged_likes: set[tuple[int, int]] = set()
    for n, (sample, write) in enumerate(zip(result.samples, load.writes, strict=False)):
        if write.kind == "post" and sample.status == 201:
            acknowledged_posts.add(n)
        elif write.kind == "like":
            pair = (write.user_id, write.post_id)
            (acknowledged_likes if sample.status == 200 else unacknowledged_likes).add(pair)
    lost_posts = len(acknowledged_posts - set(posts))
    lost_likes = len(acknowledged_likes - likes)
    return {
        "posts_acknowledged": len(acknowledged_posts),
        "posts_found": len(set(posts) & acknowledged_posts),
        "posts_lost": lost_posts,
        "posts_duplicated": sum(1 for n in posts.values() if n > 1),
        # Written although the client saw no 201 (a timeout, a dropped connection): not lost.
        "posts_unacknowledged_found": len(set(posts) - acknowledged_posts),
        "likes_acknowledged": len(acknowledged_likes),
        "likes_found": len(acknowledged_likes & likes),
        "likes_lost": lost_likes,
        "likes_unacknowledged_found": len(unacknowledged_likes & likes),
        "lost": lost_posts + lost_likes,
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# -- the run ------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Create and seed the databases, serve, load, move, measure; drop the databases."""
    urls = create_databases(args)
    console.print(f"databases {', '.join(str(u.database) for u in urls)}", highlight=False)
    try:
        return _measure(args, work, urls)
    finally:
        for url in urls:
            drop_postgres(args.database_url, str(url.database), console)


def _measure(args: argparse.Namespace, work: Path, urls: list[URL]) -> dict[str, Any]:
    sharded = {
        **base_env(),
        "FASTPOST_DB__URL": urls[0].render_as_string(hide_password=False),
        "FASTPOST_DB__SHARDS": shards_setting(urls),
        "FASTPOST_DB__SHARD_MAP_CHECK_SECONDS": f"{args.map_check_seconds:g}",
    }
    if not args.no_redis:
        sharded["FASTPOST_REDIS_URL"] = args.redis_url
    seconds = seed(args, sharded)
    console.print(
        f"seeded {args.users:,} users, {args.posts:,} posts, {args.likes:,} likes, "
        f"{args.follows:,} follows over {args.shards} databases in {seconds:.1f} s",
        highlight=False,
    )
    databases = asyncio.run(_shard_map(urls))
    source = databases[args.logical]
    target = (source + 1) % args.shards if args.to is None else args.to
    if target == source or not 0 <= target < args.shards:
        raise RuntimeError(f"--to {target}: the shard is on database {source}; pick another")
    rows_before = asyncio.run(_shard_rows(urls[source], args.logical))
    env = {
        **sharded,
        "FASTPOST_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "FASTPOST_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
        "FASTPOST_RATE_LIMITS__ENABLED": "false",
        "FASTPOST_DATA_DIR": str(work / "server"),
    }
    schedule = args.warmup + args.before + args.move_budget + args.after
    total = max(1, int(args.rate * schedule))  # as fixed_rate.drive counts them
    server_cpus = None if args.no_pin else [args.server_cpu]
    with contextlib.ExitStack() as stack:
        server = Server(
            "fastpost",
            env,
            server_cpus,
            work,
            app="fastpost.worker:create_worker_app",
            workers=args.workers,
        )
        stack.callback(server.stop)
        server.wait_ready("/health")
        load = build_load(args, urls, databases, server.base_url, total)
        preflight(server.base_url, load)
        requests_file = work / "writes.tsv"
        write_requests(requests_file, load.requests)
        console.print(
            f"load: {total:,} writes at {args.rate:g}/s over {schedule:g} s; logical shard "
            f"{args.logical} ({rows_before['posts']:,} posts) moves from database {source} "
            f"to {target} after {args.warmup + args.before:g} s",
            highlight=False,
        )
        out = work / "fixed_rate.json"
        generator_log = (work / "generator.log").open("w")
        stack.callback(generator_log.close)
        generator = subprocess.Popen(
            [
                *pin(None if args.no_pin else [args.client_cpu]),
                sys.executable, "-m", "fastpost.bench.fixed_rate",
                "--url", server.base_url, "--requests", str(requests_file),
                "--rate", f"{args.rate:g}", "--duration", f"{schedule:g}",
                "--connections", str(args.connections), "--timeout", f"{DRAIN_SECONDS:g}",
                "--out", str(out),
            ],
            cwd=ROOT, env=base_env(), stdin=subprocess.DEVNULL,
            stdout=generator_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(_stop, generator)
        with CpuSampler(server) as cpu:
            time.sleep(GENERATOR_START_SECONDS + args.warmup + args.before)
            move = run_move(args, urls, sharded.get("FASTPOST_REDIS_URL"), target)
            if generator.wait(timeout=schedule + DRAIN_SECONDS + 60) != 0:
                log = (work / "generator.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the fixed-rate generator failed:\n{log}")
        result = FixedRateResult.from_json(json.loads(out.read_text()))
    return _results(args, urls, source, target, rows_before, load, result, move, cpu)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait()


def _results(
    args: argparse.Namespace,
    urls: list[URL],
    source: int,
    target: int,
    rows_before: dict[str, int],
    load: Load,
    result: FixedRateResult,
    move: Move,
    cpu: CpuSampler,
) -> dict[str, Any]:
    bounds = within_load(window_bounds(args, result, move), result)
    groups = write_groups(source, target, args.shards)
    windows = latency_windows(bounds, result, load.writes, groups, cpu)
    steps = step_bounds(move)
    by_step = latency_windows(within_load(steps, result), result, load.writes, groups, cpu)
    before_p99 = windows["before"]["groups"]["all writes"]["p99_ms"]
    ratios = {
        name: _ratio(windows[name]["groups"]["all writes"]["p99_ms"], before_p99)
        for name in WINDOWS[1:]
        if name in windows
    }
    verify = next((line for _, line in move.lines if line.startswith("verify:")), "")
    directory_map = asyncio.run(
        _fetch(urls[0], "SELECT database, state FROM shard_map WHERE logical = $1", args.logical)
    )[0]
    notes = []
    after_seconds = bounds["after"][1] - bounds["after"][0]
    unloaded = move.finished_at - (result.started_at + result.duration_s)
    if unloaded > 0:
        notes.append(
            f"the load ended {unloaded:.1f} s before the move did: those seconds are not "
            "measured (raise --move-budget)"
        )
    elif after_seconds < args.after:
        notes.append(
            f"the move outran its budget: {after_seconds:.1f} s of load after it, not "
            f"{args.after:g} (raise --move-budget)"
        )
    if result.generator_cpu > GENERATOR_CPU_LIMIT:
        notes.append(f"generator at {result.generator_cpu:.0%} CPU: it set the pace, INVALID")
    start = result.started_at
    return {
        "config": {
            key: value for key, value in vars(args).items() if key not in ("json", "database_url")
        },
        "move": {
            "logical": args.logical,
            "source": source,
            "target": target,
            "rows_before": rows_before,
            "error": move.error,
            "lines": [[round(t - start, 4), line] for t, line in move.lines],
            # Each step's seconds, and the writes sent while it ran: which step stalls whom.
            "steps": [
                {"step": name, "seconds": high - low, **by_step[name]}
                for name, (low, high) in steps.items()
            ],
            "total_s": move.finished_at - move.began_at,
            "reported_total_s": move.reported(r"moved in ([\d.]+) s"),
            "freeze_s": (move.freeze[1] - move.freeze[0]) if move.freeze else None,
            "reported_freeze_s": move.reported(r"writes waited ([\d.]+) s"),
            "verify": verify,
            "checksums_equal": verify.endswith("checksums equal"),
        },
        "windows": {
            name: {**windows[name], "from_s": low - start, "to_s": high - start}
            for name, (low, high) in bounds.items()
        },
        "p99_ratios_to_before": ratios,
        "writes": check_writes(urls, load, result),
        "after_move": {
            "map": {"database": int(directory_map["database"]), "state": directory_map["state"]},
            "left_on_source": asyncio.run(_shard_rows(urls[source], args.logical)),
        },
        "generator_cpu": result.generator_cpu,
        "requests": len(result.samples),
        "per_second": per_second(result.samples),
        "notes": notes,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def print_results(results: dict[str, Any]) -> None:
    move = results["move"]
    out = console.print
    out(
        f"\n[bold]move of logical shard {move['logical']}[/bold]: database {move['source']} -> "
        f"{move['target']}; before the load it held {move['rows_before']['posts']:,} posts, "
        f"{sum(move['rows_before'].values()):,} rows (users, posts, tags, likes, comments)",
        highlight=False,
    )
    groups = list(move["steps"][0]["groups"])
    steps = Table(
        title="the move's steps; p99 (ms) of the writes sent while each ran, by where they go"
    )
    for column in ("step", "seconds", "writes", *groups):
        steps.add_column(column, justify="left" if column == "step" else "right")
    for step in move["steps"]:
        steps.add_row(
            step["step"],
            f"{step['seconds']:.2f}",
            f"{step['groups']['all writes']['count']:,}",
            *(_ms(step["groups"][group]["p99_ms"]) for group in groups),
        )
    out(steps)
    said = move["reported_total_s"]
    out(
        f"move total: {move['total_s']:.2f} s (the move says {said} s)",
        highlight=False,
    )
    if move["freeze_s"] is not None:
        out(
            f"writes frozen: {move['freeze_s']:.2f} s (the move says writes waited "
            f"{move['reported_freeze_s']} s)",
            highlight=False,
        )
    out(move["verify"] or "verify: NO VERIFY LINE (the move failed)", highlight=False)
    if move["error"]:
        out(f"[red]the move failed: {move['error']}[/red]", highlight=False)

    table = Table(
        title=f"write latency from intended send time, ms ({results['requests']:,} writes "
        f"at {results['config']['rate']:g}/s, open loop)"
    )
    for column in ("window", "writes to", "count", "p50", "p95", "p99", "max", "errors"):
        table.add_column(column, justify="left" if column in ("window", "writes to") else "right")
    for name, window in results["windows"].items():
        for n, (group, row) in enumerate(window["groups"].items()):
            table.add_row(
                f"{name} ({window['seconds']:.1f} s)" if n == 0 else "",
                group,
                f"{row['count']:,}",
                _ms(row["p50_ms"]),
                _ms(row["p95_ms"]),
                _ms(row["p99_ms"]),
                _ms(row["max_ms"]),
                f"{row['errors']:,}",
            )
    out(table)
    ratios = ", ".join(
        f"{name} {'-' if ratio is None else f'{ratio:.2f}x'}"
        for name, ratio in results["p99_ratios_to_before"].items()
    )
    out(f"p99 / p99 before (all writes): {ratios}", highlight=False)
    cpu = ", ".join(
        f"{name} {_ms(window['server_cpu_ms_per_write'])} ms"
        + ("" if window["server_cpu_share"] is None else f" ({window['server_cpu_share']:.0%})")
        for name, window in results["windows"].items()
    )
    out(f"server CPU per write (share of one core): {cpu}", highlight=False)
    for name, window in results["windows"].items():
        failures = ", ".join(f"{kind}: {n:,}" for kind, n in window["failures"].items())
        out(f"failed requests {name}: {failures or '0'}", highlight=False)
    writes = results["writes"]
    out(
        f"posts: {writes['posts_acknowledged']:,} answered 201, {writes['posts_found']:,} of "
        f"them found; likes: {writes['likes_acknowledged']:,} answered 200, "
        f"{writes['likes_found']:,} found; written though unacknowledged: "
        f"{writes['posts_unacknowledged_found'] + writes['likes_unacknowledged_found']:,}; "
        f"duplicated: {writes['posts_duplicated']:,}",
        highlight=False,
    )
    colour = "green" if writes["lost"] == 0 else "red"
    out(f"[{colour}]lost writes: {writes['lost']:,}[/{colour}]")
    after = results["after_move"]
    left = sum(after["left_on_source"].values())
    out(
        f"afterwards: the map names database {after['map']['database']} "
        f"({after['map']['state']}); rows of the shard left on database {move['source']}: "
        f"{left:,}",
        highlight=False,
    )
    out(f"generator CPU: {results['generator_cpu']:.0%} of a core", highlight=False)
    for note in results["notes"]:
        out(f"[yellow]note: {note}[/yellow]")


def failed(results: dict[str, Any]) -> bool:
    """A run whose move failed, lost a write or left rows behind."""
    return bool(
        results["move"]["error"]
        or not results["move"]["checksums_equal"]
        or results["writes"]["lost"]
        or sum(results["after_move"]["left_on_source"].values())
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(
        _parse_args(argv), benchmark, print_results, name="bench_shard_move", console=console,
        needs_wrk=False, failed=failed,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
