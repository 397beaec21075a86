"""Throughput of fastpost's read path against two baselines measured in the same run.

For `GET /posts/?limit=20` and `GET /posts/{id}` (anonymous caller, PostgreSQL) it measures
requests per second and p50/p99 latency of three servers, one at a time, each a single
uvicorn worker (uvloop, httptools, no access log) pinned to one core, with wrk pinned to
another:

    fastpost   the real app (FastAPI, SQLAlchemy Core on an autocommit connection)
    starlette  bare Starlette returning the exact bytes fastpost answered, fetched once
    asyncpg    Starlette + an asyncpg pool: the same SQL written by hand, the same JSON shape
               serialised with orjson (benchmarks/baseline_apps.py)

and prints each as a ratio to starlette, fastpost as a ratio to asyncpg, and a verdict on
our target (list of 20 posts at >= 0.6x of asyncpg). Runs of the three servers interleave
(route by route, repeat by repeat) so that drift in the machine's load hits all of them
alike; the figure kept is the median of the repeats. benchmarks/README.md gives each step.

    .venv/bin/python -m benchmarks.bench_reads --json reports/bench_reads.json

It creates a scratch database (default fastpost_bench), migrates and seeds it with the
`fastpost` command, and drops it at the end unless --keep-db (which also reuses a database
seeded with the same sizes by an earlier --keep-db run). Every server it starts is stopped
on the way out, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.script import run_script
from fastpost.bench.database import (
    asyncpg_dsn,
    drop_postgres,
    prepare_database,
)
from fastpost.bench.machine import cpu_model, git_revision
from fastpost.bench.servers import Server, base_env, fetch
from fastpost.bench.wrk import GENERATOR_CPU_LIMIT, WrkRun, run_wrk
from fastpost.settings import DatabaseSettings

# Rich assumes 80 columns when output goes to a file or a pipe: too narrow for the table.
console = Console() if sys.stdout.isatty() else Console(width=110)

APPS = {
    "starlette": "fastpost.bench.baseline:constant_app",
    "asyncpg": "benchmarks.baseline_apps:asyncpg_app",
    "fastpost": "fastpost.worker:create_worker_app",
}
APP_LABELS = {
    "starlette": "(b) starlette",
    "asyncpg": "(c) asyncpg",
    "fastpost": "(a) fastpost",
}

# Our targets: the list at 0.6x of hand-written asyncpg;
# the single post at 0.5x of bare Starlette once it is served from the cache.
LIST_TARGET_VS_ASYNCPG = 0.6
DETAIL_TARGET_VS_STARLETTE = 0.5
# Past this the load generator, not the server, sets the pace (Locust warns at 90% CPU for
# the same reason: https://docs.locust.io/en/stable/increasing-request-rate.html).
WRK_CPU_LIMIT = GENERATOR_CPU_LIMIT
# A single worker under 64 connections should keep its core busy; below this it was most
# likely sharing the core with something else, and its figure is low by about as much.
SERVER_CPU_FLOOR = 0.8


# --- the run ---------------------------------------------------------------------------


@dataclass
class Measure:
    app: str
    route: str
    url: str
    runs: list[WrkRun] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in self.runs))

    def notes(self) -> list[str]:
        notes = []
        errors = sum(run.non_2xx + run.socket_errors for run in self.runs)
        if errors:
            notes.append(f"{errors} errors")
        if max(run.wrk_cpu for run in self.runs) > WRK_CPU_LIMIT:
            notes.append(f"wrk >{WRK_CPU_LIMIT:.0%} CPU")
        server_cpu = self.median("server_cpu")
        if 0 < server_cpu < SERVER_CPU_FLOOR:
            notes.append(f"server had {server_cpu:.0%} of a core")
        return notes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DatabaseSettings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_reads",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of warm-up per server and route"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measure (median kept)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--users", type=int, default=1000, help="users to seed")
    parser.add_argument("--posts", type=int, default=20000, help="posts to seed")
    parser.add_argument("--limit", type=int, default=20, help="page size of the list")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL of a role that may create databases (env BENCH_ADMIN_URL)",
    )
    parser.add_argument("--db-name", default="fastpost_bench", help="scratch database name")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the database afterwards, and reuse one seeded with the same sizes",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core the servers run on")
    parser.add_argument("--client-cpu", type=int, default=1, help="core wrk runs on")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--pool-size", type=int, default=defaults.pool_size, help="fastpost and asyncpg pool"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--repeats, --duration and --connections must be positive")
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    else:
        if shutil.which("taskset") is None:
            parser.error("taskset is missing (util-linux); install it or pass --no-pin")
        cores = os.sched_getaffinity(0)
        if {args.server_cpu, args.client_cpu} - cores or args.server_cpu == args.client_cpu:
            parser.error(
                f"need two distinct cores among {sorted(cores)} for --server-cpu and "
                "--client-cpu, or pass --no-pin"
            )
    return args


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = base_env()
    servers: dict[str, Server] = {}
    try:
        db_url = prepare_database(args, env, console)
        with contextlib.ExitStack() as stack:

            def start(name: str, server_env: dict[str, str]) -> Server:
                server = Server(name, server_env, args.server_cpu, work, APPS[name])
                stack.callback(server.stop)
                servers[name] = server
                return server

            list_path = f"/posts/?limit={args.limit}"
            fastpost = start(
                "fastpost",
                {
                    **env,
                    "FASTPOST_DB__URL": db_url.render_as_string(hide_password=False),
                    "FASTPOST_DB__POOL_SIZE": str(args.pool_size),
                    # Uncached reads, no access log: the cache and the logging have their own
                    # benchmarks (bench_cache.py, bench_observability.py).
                    "FASTPOST_CACHE__ENABLED": "false",
                    "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
                    # On by default outside production only (a development aid), and sent
                    # by neither baseline: the production setting.
                    "FASTPOST_OBSERVABILITY__SERVER_TIMING": "false",
                    "FASTPOST_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
                    "FASTPOST_OBSERVABILITY__LOG_LEVEL": "WARNING",
                    "FASTPOST_DATA_DIR": str(work / "data"),
                },
            )
            fastpost.wait_ready(list_path)
            list_body = fetch(fastpost.base_url + list_path)
            items = json.loads(list_body)["items"]
            if not items:
                raise RuntimeError("the seeded database has no published posts")
            detail_path = f"/posts/{items[0]['id']}"
            detail_body = fetch(fastpost.base_url + detail_path)
            paths = {"list": list_path, "detail": detail_path}
            bodies = {"list": list_body, "detail": detail_body}
            (work / "list.json").write_bytes(list_body)
            (work / "detail.json").write_bytes(detail_body)

            start(
                "starlette",
                {
                    **env,
                    "BENCH_LIST_BODY": str(work / "list.json"),
                    "BENCH_DETAIL_BODY": str(work / "detail.json"),
                },
            ).wait_ready(list_path)
            start(
                "asyncpg",
                {
                    **env,
                    "BENCH_PG_DSN": asyncpg_dsn(db_url),
                    "BENCH_PG_POOL_MIN": "1",
                    "BENCH_PG_POOL_MAX": str(args.pool_size),
                },
            ).wait_ready(list_path)

            # The hand-written endpoint must answer what fastpost answers, or the ratio
            # compares different work.
            same_bytes = {}
            for route, path in paths.items():
                same_bytes[route] = fetch(servers["asyncpg"].base_url + path) == bodies[route]
                if not same_bytes[route]:
                    console.print(
                        f"[yellow]note: the asyncpg endpoint's {route} body differs from "
                        "fastpost's (see --json for both sizes)[/yellow]"
                    )

            measures = {
                (app, route): Measure(app, route, servers[app].base_url + path)
                for route, path in paths.items()
                for app in APPS
            }

            def load(measure: Measure, seconds: float) -> WrkRun:
                return run_wrk(
                    measure.url,
                    seconds=seconds,
                    connections=args.connections,
                    threads=args.threads,
                    cpu=args.client_cpu,
                    server=servers[measure.app],
                )

            if args.warmup > 0:
                console.print(f"warming up each server for {args.warmup:g} s per route")
                for measure in measures.values():
                    load(measure, args.warmup)
            total = args.repeats * len(measures)
            done = 0
            for repeat in range(args.repeats):
                for measure in measures.values():
                    run = load(measure, args.duration)
                    measure.runs.append(run)
                    done += 1
                    console.print(
                        f"[{done}/{total}] repeat {repeat + 1} {measure.app:<9} "
                        f"{measure.route:<6} {run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:7.2f} ms  "
                        f"{run.server_cpu_us_per_request:6,.0f} µs CPU/req  "
                        f"server CPU {run.server_cpu:4.0%}  wrk CPU {run.wrk_cpu:4.0%}",
                        highlight=False,
                        soft_wrap=True,
                    )
    finally:
        if not args.keep_db:
            drop_postgres(args.database_url, args.db_name, console)
    return _results(args, measures, paths, bodies, same_bytes)


def _results(
    args: argparse.Namespace,
    measures: dict[tuple[str, str], Measure],
    paths: dict[str, str],
    bodies: dict[str, bytes],
    same_bytes: dict[str, bool],
) -> dict[str, Any]:
    routes: dict[str, Any] = {}
    for route, path in paths.items():
        rps = {app: measures[app, route].median("rps") for app in APPS}
        cpu = {app: measures[app, route].median("server_cpu_us_per_request") for app in APPS}
        routes[route] = {
            "path": path,
            "body_bytes": len(bodies[route]),
            "asyncpg_body_identical": same_bytes[route],
            "apps": {
                app: {
                    "rps": rps[app],
                    "p50_ms": measures[app, route].median("p50_ms"),
                    "p99_ms": measures[app, route].median("p99_ms"),
                    "server_cpu": measures[app, route].median("server_cpu"),
                    "cpu_us_per_request": cpu[app],
                    "vs_starlette": _ratio(rps[app], rps["starlette"]),
                    "vs_asyncpg": _ratio(rps[app], rps["asyncpg"]),
                    # The same ratio estimated from CPU per request (c's cost / this one's).
                    "vs_asyncpg_by_cpu": _ratio(cpu["asyncpg"], cpu[app]),
                    "vs_starlette_by_cpu": _ratio(cpu["starlette"], cpu[app]),
                    "notes": measures[app, route].notes(),
                    "runs": [asdict(run) for run in measures[app, route].runs],
                }
                for app in APPS
            },
        }
    list_fastpost = routes["list"]["apps"]["fastpost"]
    detail_fastpost = routes["detail"]["apps"]["fastpost"]
    list_ratio = list_fastpost["vs_asyncpg"]
    return {
        "benchmark": "bench_reads",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "method": {
            "server": "uvicorn, 1 worker, uvloop, httptools, no access log",
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration:g}s --latency",
            "warmup_seconds": args.warmup,
            "repeats": args.repeats,
            "statistic": "median of the repeats, per figure",
            "users": args.users,
            "posts": args.posts,
            "limit": args.limit,
            "pool_size": args.pool_size,
            "asyncpg_serialiser": "orjson (OPT_UTC_Z), pool without reset query",
        },
        "routes": routes,
        "verdicts": {
            "list_vs_asyncpg": {
                "ratio": list_ratio,
                "ratio_by_cpu": list_fastpost["vs_asyncpg_by_cpu"],
                "target": LIST_TARGET_VS_ASYNCPG,
                "met": list_ratio is not None and list_ratio >= LIST_TARGET_VS_ASYNCPG,
            },
            "detail_vs_starlette_uncached": {
                "ratio": detail_fastpost["vs_starlette"],
                "ratio_by_cpu": detail_fastpost["vs_starlette_by_cpu"],
                "target": DETAIL_TARGET_VS_STARLETTE,
                "note": "the target applies to the cached post; no cache yet",
            },
        },
    }


def print_results(results: dict[str, Any]) -> None:
    method = results["method"]
    table = Table(
        title=f"fastpost reads, median of {method['repeats']} (wrk {method['wrk']})",
        caption=(
            f"server pinned to core {method['server_cpu']}, wrk to core {method['client_cpu']}; "
            "(b) = bare Starlette, same bytes; (c) = Starlette + asyncpg, same SQL and JSON"
        ),
    )
    table.add_column("route")
    table.add_column("server")
    table.add_column("req/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("CPU µs/req", justify="right")
    table.add_column("vs (b)", justify="right")
    table.add_column("vs (c)", justify="right")
    notes: list[str] = []
    for route, data in results["routes"].items():
        for i, (app, row) in enumerate(data["apps"].items()):
            table.add_row(
                route if i == 0 else "",
                APP_LABELS[app],
                f"{row['rps']:,.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['cpu_us_per_request']:,.0f}",
                _fmt_ratio(row["vs_starlette"]),
                _fmt_ratio(row["vs_asyncpg"]) if app == "fastpost" else "",
                end_section=i == len(APPS) - 1,
            )
            notes.extend(f"{route} {APP_LABELS[app]}: {note}" for note in row["notes"])
    console.print(table)
    for route, data in results["routes"].items():
        same = data["asyncpg_body_identical"]
        console.print(
            f"{route}: {data['path']}, {data['body_bytes']:,} B body; (c)'s body "
            + ("is identical" if same else "[yellow]differs[/yellow]"),
            highlight=False,
        )
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    verdict = results["verdicts"]["list_vs_asyncpg"]
    mark = "[green]MET[/green]" if verdict["met"] else "[red]NOT MET[/red]"
    console.print(
        f"list of {method['limit']} posts: fastpost at {_fmt_ratio(verdict['ratio'])} of "
        f"asyncpg ({_fmt_ratio(verdict['ratio_by_cpu'])} by CPU per request); "
        f"target >= {verdict['target']}x: {mark}",
        highlight=False,
    )
    detail = results["verdicts"]["detail_vs_starlette_uncached"]
    console.print(
        f"one post: fastpost at {_fmt_ratio(detail['ratio'])} of Starlette "
        f"({_fmt_ratio(detail['ratio_by_cpu'])} by CPU per request), uncached "
        f"(the >= {detail['target']}x target applies once the cache serves it)",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(
        _parse_args(argv), benchmark, print_results, name="bench_reads", console=console
    )


if __name__ == "__main__":
    sys.exit(main())
