"""What the observability middleware costs: `GET /health` with and without it, same run.

`GET /health` does no I/O, so the middleware's share of each request is as large as it will
ever be: this is the worst case. All servers are the real app as a `fastpost serve` worker
runs it (create_app, its process tuned by fastpost.worker) in one uvicorn worker (uvloop,
httptools), with wrk on another core. The "with" server is configured as in
production (JSON access log line per request, written to a file; prometheus_client in
multiprocess mode, as `fastpost serve` runs it; no Server-Timing header, which production
does not send unless told to: `--server-timing` measures it as development sends it). The
"without" server is the same app with the edge middleware's observing turned off (it still
enforces the body limit, which the app needs either way: see fastpost.observability.edge.Edge);
"no-log" observes but turns the access line off, to show what the line costs.

Two ways of measuring, both printed:
- one server at a time (latency, CPU per request): each repeat loads the three servers one
  after another, each going first in turn, and gives a with/without ratio; the figure is
  their median. On a shared machine a repeat's ratio moves several times as much as under
  the shared-core method: the script prints the range of the ratios of each.
- shared core, the verdict: the three servers pinned to one core at once, each loaded by
  its own wrk (fastpost.bench.wrk.run_wrk_together). They split the core's time evenly, so
  their ratio of requests per second is the inverse ratio of their CPU per request, with
  every disturbance falling on all three alike, so a repeat's ratio moves little.
  Fresh server processes for each set, as a process's memory layout alone moves its
  speed by a percent or two.
Target (issue 4): with/without >= 0.90 in requests per second.

    .venv/bin/python -m benchmarks.bench_observability [--seconds 3] [--repeats 7]
        [--sets 3] [--shared-repeats 3] [--shared-seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import uvloop
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.bench.in_process import InProcessCost, cpu_per_request, environment, pinned
from fastpost.bench.servers import Server
from fastpost.bench.wrk import WrkRun, ensure_wrk, paired_ratios, run_wrk, run_wrk_together
from fastpost.observability.edge import Edge
from fastpost.settings import ObservabilitySettings, Settings
from fastpost.worker import tune_gc_while_serving

TARGET = 0.90


def app_with_observability() -> FastAPI:
    return tune_gc_while_serving(create_app())


def app_without_access_log() -> FastAPI:
    return tune_gc_while_serving(
        create_app(Settings(observability=ObservabilitySettings(access_log=False)))
    )


def app_without_observability() -> FastAPI:
    app = tune_gc_while_serving(create_app())
    for middleware in app.user_middleware:
        if middleware.cls is Edge:
            middleware.kwargs["observe"] = False
    return app


# The servers, by name: each runs its factory (uvicorn --factory), and the in-process
# measure calls it.
APPS: dict[str, Callable[[], FastAPI]] = {
    "with": app_with_observability,
    "no-log": app_without_access_log,
    "without": app_without_observability,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sets", type=int, default=3, help="fresh server sets, shared core")
    parser.add_argument("--shared-repeats", type=int, default=3)
    parser.add_argument("--shared-seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--server-timing",
        action="store_true",
        help="send Server-Timing, as outside production (off in production by default)",
    )
    args = parser.parse_args()
    ensure_wrk()
    pinned_cores = (os.cpu_count() or 1) >= 2
    server_cpu, wrk_cpu = (0, 1) if pinned_cores else (None, None)
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as scratch:
        tmp = Path(scratch)
        (tmp / "metrics").mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
            "FASTPOST_DB__URL": f"sqlite+aiosqlite:///{tmp / 'fastpost.db'}",
            "FASTPOST_DATA_DIR": str(tmp),
            "FASTPOST_OBSERVABILITY__LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
            "FASTPOST_OBSERVABILITY__SERVER_TIMING": "true" if args.server_timing else "false",
        }

        def start(suffix: str = "") -> dict[str, Server]:
            # As a module name, not __name__: run with -m, this is __main__.
            module = "benchmarks.bench_observability"
            servers = {
                name: Server(
                    f"{name}{suffix}", env, server_cpu, tmp, app=f"{module}:{factory.__name__}"
                )
                for name, factory in APPS.items()
            }
            for server in servers.values():
                server.wait_ready("/health")
            return servers

        def load(server: Server, seconds: float) -> WrkRun:
            return run_wrk(
                f"{server.base_url}/health", seconds=seconds, connections=args.connections,
                threads=1, cpu=wrk_cpu, server=server,
            )  # fmt: skip

        def load_together(servers: dict[str, Server], seconds: float) -> dict[str, WrkRun]:
            runs = run_wrk_together(
                [(f"{server.base_url}/health", server) for server in servers.values()],
                seconds=seconds, connections=args.connections, threads=1, cpu=wrk_cpu,
            )  # fmt: skip
            return dict(zip(servers, runs, strict=True))

        runs: dict[str, list[WrkRun]] = {name: [] for name in APPS}
        servers = start()
        try:
            for server in servers.values():  # warm-up
                load(server, 2)
            order = list(servers)
            for _ in range(args.repeats):
                # Each server goes first in turn: a burst of noise from the machine's other
                # tenants then lands on each of them alike.
                for name in order:
                    runs[name].append(load(servers[name], args.seconds))
                order.append(order.pop(0))
        finally:
            for server in servers.values():
                server.stop()
        access_lines = sum(1 for _ in (tmp / "with.log").open())

        shared: dict[str, list[WrkRun]] = {name: [] for name in APPS}
        for index in range(args.sets):
            servers = start(f"-shared-{index}")
            try:
                load_together(servers, 2)  # warm-up
                for _ in range(args.shared_repeats):
                    for name, run in load_together(servers, args.shared_seconds).items():
                        shared[name].append(run)
            finally:
                for server in servers.values():
                    server.stop()
        in_process = _in_process(env, tmp / "in-process.log", server_cpu)

    where = " pinned to core 0, wrk on core 1" if pinned_cores else ""
    timing = "Server-Timing sent (development)" if args.server_timing else "no Server-Timing"
    print(f"GET /health, 1 worker{where}, {args.connections} connections, {timing}")
    print(f"one server at a time, {args.repeats} x {args.seconds:g} s:")
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
    print(f"  access log lines written by 'with': {access_lines:,}")
    # Each figure is the median of the ratios within each repeat (see paired_ratios).
    ratios = paired_ratios(runs["with"], runs["without"], "rps")
    cpu_ratio = statistics.median(
        paired_ratios(runs["without"], runs["with"], "server_cpu_us_per_request")
    )
    no_log = statistics.median(paired_ratios(runs["no-log"], runs["without"], "rps"))
    print(
        f"  with/without, median of {len(ratios)} paired repeats: "
        f"{statistics.median(ratios):.3f} in req/s (range {ratios[0]:.2f}-{ratios[-1]:.2f}), "
        f"{cpu_ratio:.3f} in server CPU per request; no-log/without {no_log:.3f}"
    )

    shared_ratios = paired_ratios(shared["with"], shared["without"], "rps")
    shared_no_log = paired_ratios(shared["no-log"], shared["without"], "rps")
    ratio = statistics.median(shared_ratios)
    print(
        f"shared core, {args.sets} fresh sets of the three servers x {args.shared_repeats} x "
        f"{args.shared_seconds:g} s, each with its own wrk:"
    )
    for name, results in shared.items():
        print(f"  {name:<8} {statistics.median(r.rps for r in results):>9,.0f} req/s")
    print(
        f"  with/without, median of {len(shared_ratios)}: {ratio:.3f} in req/s "
        f"(range {shared_ratios[0]:.3f}-{shared_ratios[-1]:.3f}); no-log/without "
        f"{statistics.median(shared_no_log):.3f} (metrics, request id; no access line)"
    )
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"target: with/without >= {TARGET:.2f} (at most 10% cost), shared core: {verdict}")
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
        apps = {name: factory() for name, factory in APPS.items()}
        with pinned(cpu):
            return uvloop.run(cpu_per_request(apps, "/health", requests_per_round=2000))


if __name__ == "__main__":
    main()
