"""GET /posts/{id} through each cache tier, against bare Starlette serving the same response.

    .venv/bin/python -m benchmarks.bench_cache [--duration 10] [--repeats 3]

One run on PostgreSQL (+ Redis for tier 2), each server one uvicorn worker pinned to core 0
and wrk pinned to core 1 (the method of bench_reads.py, benchmarks/README.md), every
figure the median of the repeats and printed as a ratio to the baseline measured in the
same run:
- baseline: bare Starlette answering with the same response as a warm fastpost: the post's
  exact bytes and the same headers (validators, policy, request id, security headers),
  written once at start-up, in a process tuned as a fastpost worker is (fastpost.worker);
- starlette, body only: the same bytes with Starlette's own headers only (informative:
  what each header fastpost sends costs, about a microsecond apiece in uvicorn's checks);
- cold: fastpost with the cache disabled (every request reads PostgreSQL);
- warm: tier 1 (the in-process cache) answers;
- tier 2: Redis answers (tier 1's TTL set to a microsecond, so it never holds the entry);
- 304: warm, with `If-None-Match` matching: revalidation with no body.
fastpost runs as in production as far as its responses go: no Server-Timing header (on by
default outside production only) and no access log (uvicorn's is off for both).
Besides req/s, each row shows the server's CPU time per request and the baseline's CPU per
request divided by the row's, per repeat: on a machine shared with other work it moves far
less than req/s, and tells the same story when the machine is quiet.
Targets (issue #14): warm >= 0.8x and 304 >= 1.0x of the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.script import run_script
from fastpost.bench.database import prepare_database
from fastpost.bench.servers import Server, base_env, fetch
from fastpost.bench.wrk import GENERATOR_CPU_LIMIT, WrkRun, paired_ratios, run_wrk
from fastpost.worker import tune_gc_while_serving

if TYPE_CHECKING:
    from fastapi import FastAPI

TARGETS = {"warm": 0.8, "304": 1.0}
REDIS_URL = "redis://127.0.0.1:6379/14"
APPS = {
    "fastpost": "fastpost.worker:create_worker_app",
    "starlette": "benchmarks.bench_cache:same_response_app",
    "body only": "fastpost.bench.baseline:constant_app",
}
BODY_ONLY = "starlette, body only"
# Headers every server sets for itself, or that belong to one request or connection: not
# copied from fastpost's response into the baseline's.
_OWN_HEADERS = frozenset({"date", "server", "content-length", "content-type", "connection"})
console = Console()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-name", default="fastpost_bench_cache")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base = base_env()
    db_url = prepare_database(args, base, console)
    redis.Redis.from_url(args.redis_url).flushdb()
    fastpost_env = {
        **base,
        "FASTPOST_DB__URL": db_url.render_as_string(hide_password=False),
        "FASTPOST_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "FASTPOST_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
        # A development aid, off in production, which the baseline does not send.
        "FASTPOST_OBSERVABILITY__SERVER_TIMING": "false",
        "FASTPOST_DATA_DIR": str(work / "data"),
    }
    variants = {
        "cold": {**fastpost_env, "FASTPOST_CACHE__ENABLED": "false"},
        "warm": fastpost_env,
        "tier 2": {
            **fastpost_env,
            "FASTPOST_REDIS_URL": args.redis_url,
            "FASTPOST_CACHE__LOCAL_TTL_SECONDS": "0.000001",
        },
    }
    with contextlib.ExitStack() as stack:

        def start(name: str, env: dict[str, str], app: str | None = None) -> Server:
            server = Server(name, env, 0, work, app=app or APPS[name])
            stack.callback(server.stop)
            return server

        servers = {name: start("fastpost", env) for name, env in variants.items()}
        for server in servers.values():
            server.wait_ready("/posts/?limit=1")
        some = json.loads(fetch(servers["cold"].base_url + "/posts/?limit=1"))["items"][0]
        path = f"/posts/{some['id']}"
        body = fetch(servers["warm"].base_url + path)
        (work / "post.json").write_bytes(body)
        post_file = str(work / "post.json")
        answer_headers = _response_headers(servers["warm"].base_url + path)
        bodies = {"BENCH_LIST_BODY": post_file, "BENCH_DETAIL_BODY": post_file}
        baseline = start(
            "starlette",
            {**base, **bodies, "BENCH_HEADERS": json.dumps(answer_headers)},
        )
        body_only = start("body only", {**base, **bodies})
        for server in (baseline, body_only):
            server.wait_ready(path)
        etag = dict(answer_headers)["etag"]
        plan: list[tuple[str, Server, tuple[str, ...]]] = [
            ("baseline", baseline, ()),
            (BODY_ONLY, body_only, ()),
            ("cold", servers["cold"], ()),
            ("warm", servers["warm"], ()),
            ("tier 2", servers["tier 2"], ()),
            ("304", servers["warm"], (f"If-None-Match: {etag}",)),
        ]
        runs: dict[str, list[WrkRun]] = {name: [] for name, _, _ in plan}
        for _, server, headers in plan:
            run_wrk(
                server.base_url + path, seconds=args.warmup, connections=args.connections,
                threads=1, cpu=1, server=server, headers=headers,
            )  # fmt: skip
        for repeat in range(args.repeats):
            for name, server, headers in plan:
                run = run_wrk(
                    server.base_url + path, seconds=args.duration, connections=args.connections,
                    threads=1, cpu=1, server=server, headers=headers,
                )  # fmt: skip
                runs[name].append(run)
                console.print(
                    f"[{repeat + 1}/{args.repeats}] {name:<8} {run.rps:>9,.0f} req/s  "
                    f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                    f"wrk CPU {run.wrk_cpu:.0%}"
                )
    return _results(path, len(body), runs)


def _response_headers(url: str) -> list[tuple[str, str]]:
    """The headers of fastpost's answer at `url` that the baseline sends as well."""
    import urllib.request

    with urllib.request.urlopen(url) as response:
        return [
            (name.lower(), value)
            for name, value in response.headers.items()
            if name.lower() not in _OWN_HEADERS
        ]


def same_response_app() -> Starlette:
    """The baseline: BENCH_DETAIL_BODY's bytes at /posts/{id} with the headers in
    BENCH_HEADERS (a JSON list of [name, value]), made once, in a process whose
    garbage collector is tuned as a fastpost worker's is (uvicorn's factory)."""
    body = Path(os.environ["BENCH_DETAIL_BODY"]).read_bytes()
    extra = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in json.loads(os.environ.get("BENCH_HEADERS", "[]"))
    ]

    async def read_post(request: Request) -> Response:
        response = Response(body, media_type="application/json")
        response.raw_headers.extend(extra)
        return response

    app = Starlette(routes=[Route("/posts/{post_id:int}", read_post)])
    # It reads only app.router.lifespan_context, which Starlette has as FastAPI does.
    tune_gc_while_serving(cast("FastAPI", app))
    return app


def _results(path: str, size: int, runs: dict[str, list[WrkRun]]) -> dict[str, Any]:
    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(run, field) for run in runs[name]))

    base_rps = median("baseline", "rps")
    body_only_rps = median(BODY_ONLY, "rps")
    rows = {}
    for name in runs:
        rps = median(name, "rps")
        rows[name] = {
            "rps": rps,
            "p50_ms": median(name, "p50_ms"),
            "p99_ms": median(name, "p99_ms"),
            "ratio": rps / base_rps if base_rps else None,
            # The comparison before the baseline sent fastpost's headers too.
            "vs_body_only": rps / body_only_rps if body_only_rps else None,
            "cpu_us": median(name, "server_cpu_us_per_request"),
            # Per repeat, the baseline's CPU per request over this row's (> 1: cheaper).
            "cpu_ratio": statistics.median(
                paired_ratios(runs["baseline"], runs[name], "server_cpu_us_per_request")
            ),
            "errors": sum(r.socket_errors for r in runs[name]),
            "wrk_over_limit": any(r.wrk_cpu > GENERATOR_CPU_LIMIT for r in runs[name]),
        }
    return {"path": path, "body_bytes": size, "results": rows, "targets": TARGETS}


def print_results(results: dict[str, Any]) -> None:
    table = Table(title=f"GET {results['path']} ({results['body_bytes']} B), median of runs")
    columns = (
        "variant", "req/s", "p50 ms", "p99 ms", "vs baseline", "vs body only", "CPU us/req",
        "by CPU",
    )  # fmt: skip
    for column in (*columns, "target"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in results["results"].items():
        target = results["targets"].get(name)
        verdict = ""
        if target is not None:
            verdict = f">= {target}x " + ("met" if row["ratio"] >= target else "NOT MET")
        note = " (wrk > 90% CPU: invalid)" if row["wrk_over_limit"] else ""
        table.add_row(
            name + note,
            f"{row['rps']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['ratio']:.2f}x",
            f"{row['vs_body_only']:.2f}x",
            f"{row['cpu_us']:.1f}",
            f"{row['cpu_ratio']:.2f}x",
            verdict,
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    return run_script(
        _parse_args(argv), benchmark, print_results, name="bench_cache", console=console
    )


if __name__ == "__main__":
    sys.exit(main())
