"""What the observability middleware costs: `GET /health` with and without it, same run.

`GET /health` does no I/O, so the middleware's share of each request is as large as it will
ever be: this is the worst case. Both servers are the real app (create_app) in one uvicorn
worker (uvloop, httptools) pinned to one core, with wrk pinned to another; the "with" server
is configured as in production (JSON access log line per request, written to a file;
prometheus_client in multiprocess mode, as `fastpost serve` runs it). The "without" server is
the same app with the edge middleware's observing turned off (it still enforces the body
limit, which the app needs either way: see fastpost.middleware.Edge); "no-log" observes but
turns the access line off, to show what the line costs. Runs alternate, each server going first in
turn; each repeat gives a with/without ratio, and the verdict is their median. Target
(issue 4): with/without >= 0.90 in requests per second.

    .venv/bin/python -m benchmarks.bench_observability [--seconds 3] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

import uvloop
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.bench.in_process import InProcessCost, cpu_per_request, environment, pinned
from fastpost.bench.servers import Server
from fastpost.bench.wrk import WrkRun, ensure_wrk, paired_ratios, run_wrk
from fastpost.middleware import Edge
from fastpost.settings import ObservabilitySettings, Settings

TARGET = 0.90


def app_with_observability() -> FastAPI:
    return create_app()


def app_without_access_log() -> FastAPI:
    return create_app(Settings(observability=ObservabilitySettings(access_log=False)))


def app_without_observability() -> FastAPI:
    app = create_app()
    for middleware in app.user_middleware:
        if middleware.cls is Edge:
            middleware.kwargs["observe"] = False
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    ensure_wrk()
    pinned = (os.cpu_count() or 1) >= 2
    server_cpu, wrk_cpu = (0, 1) if pinned else (None, None)
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as scratch:
        tmp = Path(scratch)
        (tmp / "metrics").mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
            "FASTPOST_DB__URL": f"sqlite+aiosqlite:///{tmp / 'fastpost.db'}",
            "FASTPOST_DATA_DIR": str(tmp),
            "FASTPOST_OBSERVABILITY__LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        }
        module = "benchmarks.bench_observability"
        servers = {
            "with": Server("with", env, server_cpu, tmp, app=f"{module}:app_with_observability"),
            "no-log": Server(
                "no-log", env, server_cpu, tmp, app=f"{module}:app_without_access_log"
            ),
            "without": Server(
                "without", env, server_cpu, tmp, app=f"{module}:app_without_observability"
            ),
        }
        runs: dict[str, list[WrkRun]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.wait_ready("/health")
            for server in servers.values():  # warm-up
                run_wrk(
                    f"{server.base_url}/health", seconds=2, connections=args.connections,
                    threads=1, cpu=wrk_cpu, server=server,
                )  # fmt: skip
            order = list(servers)
            for _ in range(args.repeats):
                # Each server goes first in turn: a burst of noise from the machine's other
                # tenants then lands on each of them alike.
                for name in order:
                    server = servers[name]
                    run = run_wrk(
                        f"{server.base_url}/health", seconds=args.seconds,
                        connections=args.connections, threads=1, cpu=wrk_cpu, server=server,
                    )  # fmt: skip
                    runs[name].append(run)
                order.append(order.pop(0))
        finally:
            for server in servers.values():
                server.stop()
        access_lines = sum(1 for _ in (tmp / "with.log").open())
        in_process = _in_process(env, tmp / "in-process.log", server_cpu)
    print(f"GET /health, 1 worker{' pinned to core 0, wrk on core 1' if pinned else ''}, "
          f"{args.repeats} x {args.seconds:g} s, {args.connections} connections")  # fmt: skip
    median: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        median[name] = {
            key: statistics.median(getattr(r, key) for r in results)
            for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request", "wrk_cpu")
        }
        m = median[name]
        print(
            f"  {name:<8} {m['rps']:>9,.0f} req/s  p50 {m['p50_ms']:.2f} ms  "
            f"p99 {m['p99_ms']:.2f} ms  server CPU {m['server_cpu_us_per_request']:.1f} us/req  "
            f"wrk CPU {m['wrk_cpu']:.0%}"
        )

    # The verdict is the median of the ratios within each repeat (see paired_ratios).
    def paired(name: str, key: str = "rps") -> list[float]:
        return paired_ratios(runs[name], runs["without"], key)

    ratios = paired("with")
    ratio = statistics.median(ratios)
    cpu_ratio = statistics.median(1 / r for r in paired("with", "server_cpu_us_per_request"))
    no_log = statistics.median(paired("no-log"))
    print(f"  access log lines written by 'with': {access_lines:,}")
    print(
        f"with/without, median of {len(ratios)} paired repeats: {ratio:.3f} in req/s "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}), {cpu_ratio:.3f} in server CPU per request"
    )
    print(f"no-log/without (metrics, request id, Server-Timing; no access line): {no_log:.3f}")
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"target: with/without >= {TARGET:.2f} (at most 10% cost): {verdict}")
    best = {name: cost.best for name, cost in in_process.items()}
    extra = best["with"] - best["without"]
    print(
        f"in process (no HTTP server, no wrk; best of {len(in_process['with'].rounds)} rounds): "
        f"with {best['with']:.1f} us CPU/req, no-log {best['no-log']:.1f}, without "
        f"{best['without']:.1f}: the middleware's own {extra:.1f} us is "
        f"{extra / median['with']['server_cpu_us_per_request']:.1%} of a served request's "
        f"server CPU (wrk, 'with')"
    )


def _in_process(env: dict[str, str], log: Path, cpu: int | None) -> dict[str, InProcessCost]:
    """The three apps called in this process, on the server's core (see
    fastpost.bench.in_process): the middleware's own CPU, without uvicorn's and the noise
    that moves wrk's figures. Their log lines go to `log`."""
    with environment(env), log.open("w") as out, contextlib.redirect_stdout(out):
        apps = {
            "with": app_with_observability(),
            "no-log": app_without_access_log(),
            "without": app_without_observability(),
        }
        with pinned(cpu):
            return uvloop.run(cpu_per_request(apps, "/health", requests_per_round=2000))


if __name__ == "__main__":
    main()
