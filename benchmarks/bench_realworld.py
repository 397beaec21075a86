"""GET /api/articles?limit=20 (RealWorld) against a hand-written one-statement endpoint, at
1,000 and at 1,000,000 articles.

    .venv/bin/python -m benchmarks.bench_realworld [--sizes 1000,1000000] [--keep-db]

For each size, one PostgreSQL database seeded by `fastpost seed` (20 tags, 0-3 per
article), and three servers, each one uvicorn worker pinned to core 0, wrk pinned to core 1
(the method of bench_reads.py, benchmarks/README.md), every figure the median of the
repeats, each ratio the median of the ratios within each repeat:
- (c) Starlette + asyncpg + orjson, the page as one SQL statement (benchmarks/
  baseline_realworld.py), checked to answer fastpost's exact bytes;
- fastpost with the cache off: one statement (the page, each row carrying the total);
- fastpost with the cache on (in-process tier, Redis behind it): the anonymous first page
  is served from memory after the first request.
Then (c) and fastpost with the cache off are called again in this process, on the same core,
without uvicorn or wrk (fastpost.bench.in_process): their own CPU per request, a figure the
machine's noise moves far less than wrk's requests per second.
Targets (issue 6): cache off >= 0.7x of (c) at each size, and flat from the small size to
the large one (each server's req/s at the large size over its req/s at the small one).
Seeding a million articles takes a few minutes; `--keep-db` keeps the databases and reuses
them next time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import uvloop
from rich.table import Table

from benchmarks.baseline_realworld import realworld_app
from benchmarks.bench_reads import console
from benchmarks.script import run_script
from fastpost.bench.database import asyncpg_dsn, drop_postgres, prepare_postgres
from fastpost.bench.in_process import cpu_per_request, environment, pinned
from fastpost.bench.machine import git_revision
from fastpost.bench.servers import Server, base_env, fetch
from fastpost.bench.wrk import GENERATOR_CPU_LIMIT, WrkRun, paired_ratios, run_wrk

TARGET_UNCACHED = 0.7
SERVERS = {
    "asyncpg": "(c) asyncpg, 1 statement",
    "uncached": "fastpost, cache off",
    "cached": "fastpost, cache on",
}
APPS = {
    "asyncpg": "benchmarks.baseline_realworld:realworld_app",
    "uncached": "fastpost.worker:create_worker_app",
    "cached": "fastpost.worker:create_worker_app",
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_realworld",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", default="1000,1000000", help="articles to seed, per run")
    parser.add_argument("--limit", type=int, default=20, help="page size")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measure (median)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL URL of a role that may create databases",
    )
    parser.add_argument("--db-prefix", default="fastpost_bench_rw", help="scratch databases")
    parser.add_argument("--keep-db", action="store_true", help="keep and reuse the databases")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--pool-size", type=int, default=10, help="each server's pool")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def _users_for(posts: int) -> int:
    # About 100 articles per author, as in the 1M-post data set of issue 2 (10,000 users).
    return min(10_000, max(100, posts // 100))


def _median(runs: list[WrkRun], name: str) -> float:
    return float(statistics.median(getattr(run, name) for run in runs))


def _in_process(envs: dict[str, dict[str, str]], path: str, cpu: int | None) -> dict[str, Any]:
    """(c) and fastpost with the cache off, called in this process (fastpost.bench.in_process):
    the apps' own CPU per request, without the HTTP server and wrk, on the server's core."""
    from fastpost.worker import create_worker_app

    apps: dict[str, Any] = {}
    with environment(envs["asyncpg"]):
        apps["asyncpg"] = realworld_app()
    with environment(envs["uncached"]):
        apps["uncached"] = create_worker_app()
    route, _, query = path.partition("?")
    with environment(envs["uncached"]), pinned(cpu):
        costs = uvloop.run(cpu_per_request(apps, route, query))
    if costs["uncached"].body != costs["asyncpg"].body:
        console.print("[yellow]note: in process, fastpost's body differs from (c)'s[/yellow]")
    paired = [a / b for a, b in zip(costs["asyncpg"].rounds, costs["uncached"].rounds, strict=True)]
    return {
        "cpu_us_per_request": {name: cost.best for name, cost in costs.items()},
        "rounds": {name: cost.rounds for name, cost in costs.items()},
        "ratio_best": costs["asyncpg"].best / costs["uncached"].best,
        "ratio_paired_median": statistics.median(paired),
    }


def _paired(top: list[WrkRun], bottom: list[WrkRun], name: str) -> float | None:
    """The median over repeats of top/bottom (see paired_ratios)."""
    if not all(getattr(run, name) for run in bottom):
        return None
    return float(statistics.median(paired_ratios(top, bottom, name)))


def _measure_size(args: argparse.Namespace, size: int, work: Path) -> dict[str, Any]:
    env = base_env()
    db_url = prepare_postgres(
        args.database_url,
        f"{args.db_prefix}_{size}",
        seed_args={"users": _users_for(size), "posts": size},
        keep=args.keep_db,
        env=env,
        console=console,
    )
    redis.Redis.from_url(args.redis_url).flushdb()
    path = f"/api/articles?limit={args.limit}"
    fastpost_env = {
        **env,
        "FASTPOST_DB__URL": db_url.render_as_string(hide_password=False),
        "FASTPOST_DB__POOL_SIZE": str(args.pool_size),
        "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
        "FASTPOST_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "FASTPOST_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "FASTPOST_DATA_DIR": str(work / "data"),
    }
    envs = {
        "asyncpg": {
            **env,
            "BENCH_PG_DSN": asyncpg_dsn(db_url),
            "BENCH_PG_POOL_MAX": str(args.pool_size),
        },
        "uncached": {**fastpost_env, "FASTPOST_CACHE__ENABLED": "false"},
        "cached": {**fastpost_env, "FASTPOST_REDIS_URL": args.redis_url},
    }
    runs: dict[str, list[WrkRun]] = {name: [] for name in SERVERS}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name in SERVERS:
            server = Server(f"{name}-{size}", envs[name], args.server_cpu, work, app=APPS[name])
            stack.callback(server.stop)
            server.wait_ready(path)
            servers[name] = server
        bodies = {name: fetch(server.base_url + path) for name, server in servers.items()}
        articles = json.loads(bodies["uncached"])
        same_bytes = {name: body == bodies["asyncpg"] for name, body in bodies.items()}
        for name, same in same_bytes.items():
            if not same:
                console.print(f"[yellow]note: {name}'s body differs from (c)'s[/yellow]")

        def load(name: str, seconds: float) -> WrkRun:
            return run_wrk(
                servers[name].base_url + path,
                seconds=seconds,
                connections=args.connections,
                threads=1,
                cpu=args.client_cpu,
                server=servers[name],
            )

        for name in SERVERS:
            load(name, args.warmup)
        order = list(SERVERS)
        for repeat in range(args.repeats):
            # Interleaved, each server first in turn: a change in the machine's load hits
            # every server alike.
            for name in order:
                run = load(name, args.duration)
                runs[name].append(run)
                console.print(
                    f"{size:>9,} articles  repeat {repeat + 1}  {name:<8} {run.rps:>8,.0f} req/s"
                    f"  p99 {run.p99_ms:7.2f} ms  {run.server_cpu_us_per_request:6,.0f} µs "
                    f"CPU/req  wrk CPU {run.wrk_cpu:4.0%}",
                    highlight=False,
                )
            order.append(order.pop(0))
    in_process = _in_process(envs, path, args.server_cpu)
    rps = {name: _median(runs[name], "rps") for name in SERVERS}
    cpu = {name: _median(runs[name], "server_cpu_us_per_request") for name in SERVERS}
    return {
        "articles": size,
        "in_process": in_process,
        "articles_count": articles["articlesCount"],
        "body_bytes": len(bodies["uncached"]),
        "same_bytes_as_baseline": same_bytes,
        "servers": {
            name: {
                "rps": rps[name],
                "p50_ms": _median(runs[name], "p50_ms"),
                "p99_ms": _median(runs[name], "p99_ms"),
                "cpu_us_per_request": cpu[name],
                "vs_asyncpg": _paired(runs[name], runs["asyncpg"], "rps"),
                "vs_asyncpg_by_cpu": _paired(
                    runs["asyncpg"], runs[name], "server_cpu_us_per_request"
                ),
                "errors": sum(run.non_2xx + run.socket_errors for run in runs[name]),
                "non_2xx": sum(run.non_2xx for run in runs[name]),
                "socket_errors": sum(run.socket_errors for run in runs[name]),
                "requests": sum(run.requests for run in runs[name]),
                "wrk_over_limit": any(run.wrk_cpu > GENERATOR_CPU_LIMIT for run in runs[name]),
                "runs": [vars(run) for run in runs[name]],
            }
            for name in SERVERS
        },
    }


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = []
    for size in args.sizes:
        try:
            sizes.append(_measure_size(args, size, work))
        finally:
            if not args.keep_db:
                drop_postgres(args.database_url, f"{args.db_prefix}_{size}", console)
    small, large = sizes[0], sizes[-1]
    flatness = {
        name: large["servers"][name]["rps"] / small["servers"][name]["rps"] for name in SERVERS
    }
    return {
        "benchmark": "bench_realworld",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "method": {
            "path": f"/api/articles?limit={args.limit}",
            "wrk": f"-t1 -c{args.connections} -d{args.duration:g}s --latency",
            "repeats": args.repeats,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
        },
        "sizes": sizes,
        "flatness": flatness,
        "verdicts": {
            f"uncached_vs_asyncpg_at_{size['articles']}": {
                "ratio": size["servers"]["uncached"]["vs_asyncpg"],
                "target": TARGET_UNCACHED,
                "met": (size["servers"]["uncached"]["vs_asyncpg"] or 0) >= TARGET_UNCACHED,
            }
            for size in sizes
        },
    }


def print_results(results: dict[str, Any]) -> None:
    method = results["method"]
    table = Table(
        title=f"{method['path']}, median of {method['repeats']} (wrk {method['wrk']})",
        caption="one uvicorn worker each on core "
        f"{method['server_cpu']}, wrk on core {method['client_cpu']}",
    )
    columns = ("articles", "server", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "vs (c)", "by CPU")
    for column in columns:
        table.add_column(column, justify="left" if column in ("articles", "server") else "right")
    for size in results["sizes"]:
        for i, (name, row) in enumerate(size["servers"].items()):
            ratio, by_cpu = row["vs_asyncpg"], row["vs_asyncpg_by_cpu"]
            table.add_row(
                f"{size['articles']:,}" if i == 0 else "",
                SERVERS[name],
                f"{row['rps']:,.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['cpu_us_per_request']:,.0f}",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{by_cpu:.2f}x" if by_cpu is not None else "-",
                end_section=i == len(SERVERS) - 1,
            )
    console.print(table)
    for size in results["sizes"]:
        for name, row in size["servers"].items():
            if row["errors"]:
                console.print(
                    f"[yellow]note:[/yellow] {size['articles']:,} {name}: {row['non_2xx']:,} "
                    f"non-2xx and {row['socket_errors']:,} socket errors (wrk's timeouts "
                    f"included) in {row['requests']:,} requests",
                    highlight=False,
                )
            if row["wrk_over_limit"]:
                console.print(
                    f"[yellow]note:[/yellow] {size['articles']:,} {name}: wrk above "
                    f"{GENERATOR_CPU_LIMIT:.0%} CPU, the figure is a floor"
                )
        in_process = size["in_process"]
        console.print(
            f"{size['articles']:,} articles, in process (no HTTP server, no wrk; best of "
            f"{len(in_process['rounds']['asyncpg'])} rounds): (c) "
            f"{in_process['cpu_us_per_request']['asyncpg']:,.0f} µs CPU/req, fastpost cache off "
            f"{in_process['cpu_us_per_request']['uncached']:,.0f}: {in_process['ratio_best']:.2f}x "
            f"(median of paired rounds {in_process['ratio_paired_median']:.2f}x)",
            highlight=False,
        )
        same = all(size["same_bytes_as_baseline"].values())
        console.print(
            f"{size['articles']:,} articles: {size['body_bytes']:,} B body, "
            f"articlesCount {size['articles_count']:,}; (c)'s body "
            + ("is identical" if same else "[yellow]differs[/yellow]"),
            highlight=False,
        )
    flat = ", ".join(f"{SERVERS[name]} {value:.2f}x" for name, value in results["flatness"].items())
    console.print(f"largest size over smallest, req/s: {flat}", highlight=False)
    for name, verdict in results["verdicts"].items():
        mark = "[green]MET[/green]" if verdict["met"] else "[red]NOT MET[/red]"
        console.print(
            f"{name}: {verdict['ratio']:.2f}x, target >= {verdict['target']}x: {mark}",
            highlight=False,
        )


def main(argv: list[str] | None = None) -> int:
    return run_script(_parse_args(argv), benchmark, print_results, name="bench_rw", console=console)


if __name__ == "__main__":
    sys.exit(main())
