"""The body of `fastpost bench` (see fastpost.bench.command for the order of things)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fastpost.bench import capacity as capacity_search
from fastpost.bench import plots, report, routes, scenarios, targets
from fastpost.bench.baseline import padded_json
from fastpost.bench.command import Backend, Config, console
from fastpost.bench.database import drop_postgres, prepare_postgres, prepare_sqlite
from fastpost.bench.fixed_rate import FixedRateResult
from fastpost.bench.latency import summarise
from fastpost.bench.machine import cpu_model, git_revision
from fastpost.bench.prometheus import delta, scrape
from fastpost.bench.requests_file import HttpRequest, write_requests
from fastpost.bench.resources import WorkerSampler
from fastpost.bench.servers import ROOT, Server, base_env, pin, stop_on_signals
from fastpost.bench.wrk import GENERATOR_CPU_LIMIT, REQUESTS_SCRIPT, WrkRun, ensure_wrk, run_wrk

# Requests checked one by one before the load, and sampled for the baseline's body size.
PREFLIGHT_REQUESTS = 40


def _fastpost_env(config: Config, db_url: str, work: Path) -> dict[str, str]:
    env = {
        **base_env(),
        "FASTPOST_DB__URL": db_url,
        "FASTPOST_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "FASTPOST_OBSERVABILITY__ACCESS_LOG": "false",
        "FASTPOST_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "FASTPOST_DATA_DIR": str(work / "data"),
        "FASTPOST_CACHE__ENABLED": "true" if config.cache else "false",
        # The load comes from one address and logs in and writes far faster than any
        # person: the rate limits would answer most of it 429.
        "FASTPOST_RATE_LIMITS__ENABLED": "false",
    }
    if config.redis:
        env["FASTPOST_REDIS_URL"] = config.redis_url
    return env


def _preflight(base_url: str, requests: list[HttpRequest]) -> int:
    """Send the first requests of the list once; fail on any non-2xx; return the median size."""
    sizes = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for request in requests[:PREFLIGHT_REQUESTS]:
            headers = {"Authorization": request.authorization} if request.authorization else {}
            if request.body is not None:
                headers["Content-Type"] = "application/json"
            answer = client.request(
                request.method, request.path, headers=headers, content=request.body
            )
            if not answer.is_success:
                raise RuntimeError(
                    f"{request.method} {request.path} answered {answer.status_code}: "
                    f"{answer.text[:300]}"
                )
            sizes.append(len(answer.content))
    return int(statistics.median(sizes))


def _fixed_rate(
    config: Config, url: str, requests_file: Path, rate: float, seconds: float, work: Path
) -> FixedRateResult:
    out = work / "fixed_rate.json"
    command = [
        *pin(config.client_cpus),
        sys.executable,
        "-m",
        "fastpost.bench.fixed_rate",
        "--url",
        url,
        "--requests",
        str(requests_file),
        "--rate",
        f"{rate:g}",
        "--duration",
        f"{seconds:g}",
        "--connections",
        str(config.fixed_connections),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the fixed-rate generator failed:\n{done.stdout}{done.stderr}")
    return FixedRateResult.from_json(json.loads(out.read_text()))


def _wrk_row(run: WrkRun, baseline: WrkRun | None) -> dict[str, Any]:
    row = asdict(run)
    errors = routes.wrk_total_errors(run)
    row["attempted"] = run.attempted
    row["errors_by_type"] = errors
    row["errors"] = routes.error_count(errors)
    row["error_rate"] = row["errors"] / run.attempted if run.attempted else 0.0
    row["routes"] = routes.wrk_rows(run)
    row["valid"] = run.wrk_cpu <= GENERATOR_CPU_LIMIT
    row["vs_baseline"] = run.rps / baseline.rps if baseline and baseline.rps else None
    return row


def _fixed_errors(fixed: FixedRateResult) -> dict[str, Any]:
    """The fixed-rate run's errors by type, all routes together."""
    total: dict[str, Any] = {"timeout": 0, "socket": dict.fromkeys(routes.SOCKET_ERRORS, 0)}
    status: dict[str, int] = {}
    for row in routes.fixed_rate_rows(fixed.samples, fixed.elapsed_s):
        total["timeout"] += row["errors"]["timeout"]
        for kind, n in row["errors"]["socket"].items():
            total["socket"][kind] += n
        for code, n in row["errors"]["status"].items():
            status[code] = status.get(code, 0) + n
    total["status"] = dict(sorted(status.items()))
    return total


def _pinning(config: Config) -> dict[str, Any]:
    """Which cores run what, and what shares a core."""
    server = config.server_cpus
    shared = []
    if server is not None and config.workers > len(server):
        shared.append(
            f"fastpost's {config.workers} workers share core(s) {server}, and so do the "
            f"baseline's {config.workers} (one server at a time)"
        )
    return {
        "fastpost_workers": server,
        "baseline_workers": server if config.baseline else None,
        "generators": config.client_cpus,
        "database": "not pinned",
        "shared": shared,
    }


def _shares(requests: list[HttpRequest]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for request in requests:
        counts[request.route] = counts.get(request.route, 0) + 1
    return {route: n / len(requests) for route, n in counts.items()}


def run_bench(config: Config, out: Path) -> dict[str, Any]:
    """Run the whole benchmark and return the report (also written into `out`)."""
    ensure_wrk(console)
    out.mkdir(parents=True, exist_ok=True)
    seed_args = {
        "users": config.users,
        "posts": config.posts,
        "follows": config.follows,
        "likes": config.likes,
    }
    notes: list[str] = []
    with (
        stop_on_signals(),
        tempfile.TemporaryDirectory(prefix="fastpost_bench_") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        env = base_env()
        if config.database == Backend.postgres:
            db_url = prepare_postgres(
                config.database_url,
                config.db_name,
                seed_args=seed_args,
                keep=config.keep_db,
                env=env,
                console=console,
            ).render_as_string(hide_password=False)
            if not config.keep_db:
                stack.callback(drop_postgres, config.database_url, config.db_name, console)
        else:
            path = Path(config.sqlite_path or (work / "fastpost_bench.db"))
            if config.keep_db and not config.sqlite_path:
                path = Path("data") / f"bench-{config.users}-{config.posts}.db"
            db_url = prepare_sqlite(
                path, seed_args=seed_args, keep=config.keep_db, env=env, console=console
            )
        if config.redis:
            import redis

            redis.Redis.from_url(config.redis_url).flushdb()

        def start(name: str, server_env: dict[str, str], **kwargs: Any) -> Server:
            server = Server(name, server_env, config.server_cpus, work, **kwargs)
            stack.callback(server.stop)
            return server

        fastpost = start(
            "fastpost",
            _fastpost_env(config, db_url, work),
            command=[
                sys.executable,
                "-m",
                "fastpost.cli",
                "serve",
                "--port",
                "{port}",
                "--workers",
                str(config.workers),
            ],
        )
        fastpost.wait_ready("/health")
        with httpx.Client(base_url=fastpost.base_url, timeout=30) as client:
            post_ids, user_ids, slugs = scenarios.discover(client)
            logins = config.login_users if scenarios.needs_login(config.scenario) else 0
            sessions = scenarios.log_in(client, user_ids, logins) if logins else []
        requests = scenarios.build(
            config.scenario, scenarios.Dataset(post_ids, user_ids, sessions, slugs)
        )
        requests_file = work / "requests.tsv"
        write_requests(requests_file, requests)
        shutil.copy(requests_file, out / "requests.tsv")
        body_bytes = _preflight(fastpost.base_url, requests)
        console.print(
            f"{config.scenario}: {len(requests)} requests in the cycle, "
            f"median response {body_bytes:,} B",
            highlight=False,
        )

        baseline: Server | None = None
        if config.baseline:
            (work / "body.json").write_bytes(padded_json(body_bytes))
            baseline_env = {**base_env(), "BENCH_BODY": str(work / "body.json")}
            # The same uvicorn flags as `fastpost serve` runs with (servers.UVICORN_FLAGS).
            baseline = start(
                "baseline",
                baseline_env,
                app="fastpost.bench.baseline:constant_body_app",
                workers=config.workers,
            )
            baseline.wait_ready("/health")

        def wrk(server: Server, seconds: float) -> WrkRun:
            return run_wrk(
                server.base_url,
                seconds=seconds,
                connections=config.connections,
                threads=config.threads,
                cpu=config.client_cpus,
                server=server,
                script=REQUESTS_SCRIPT,
                script_args=[str(requests_file)],
            )

        if config.warmup > 0:
            console.print(f"warming up for {config.warmup:g} s per server")
            for server in filter(None, (fastpost, baseline)):
                wrk(server, config.warmup)

        before = scrape(fastpost.base_url)
        with WorkerSampler(fastpost.pids) as throughput_usage:
            fastpost_run = wrk(fastpost, config.duration)
        # Each worker folds its tallies into the shared metrics once a second.
        time.sleep(1.2)
        metrics = delta(before, scrape(fastpost.base_url))
        console.print(f"wrk fastpost: {fastpost_run.rps:,.0f} req/s", highlight=False)
        baseline_run = wrk(baseline, config.duration) if baseline else None
        if baseline_run:
            console.print(f"wrk baseline: {baseline_run.rps:,.0f} req/s", highlight=False)

        with WorkerSampler(fastpost.pids) as fixed_usage:
            fixed = _fixed_rate(
                config, fastpost.base_url, requests_file, config.rate, config.fixed_duration, work
            )
        fixed_latency = summarise(fixed.samples)
        console.print(
            f"fixed rate {config.rate:g}/s: p99 {fixed_latency.p99_ms:,.1f} ms", highlight=False
        )

        found: capacity_search.Capacity | None = None
        found_baseline: capacity_search.Capacity | None = None

        def search_capacity(server: Server) -> capacity_search.Capacity:
            def measure(rate: float) -> capacity_search.Step:
                result = _fixed_rate(
                    config, server.base_url, requests_file, rate, config.step_duration, work
                )
                summary = summarise(result.samples)
                step = capacity_search.Step(
                    offered_rps=rate,
                    achieved_rps=result.achieved_rps,
                    p50_ms=summary.p50_ms,
                    p99_ms=summary.p99_ms,
                    requests=summary.count,
                    errors=summary.errors,
                    generator_cpu=result.generator_cpu,
                )
                console.print(
                    f"capacity step {server.name} {rate:,.0f}/s: p99 {step.p99_ms:,.1f} ms, "
                    f"{step.errors} errors, answered {step.achieved_rps:,.0f}/s",
                    highlight=False,
                )
                return step

            return capacity_search.search(
                measure,
                start=config.start_rate,
                factor=config.step_factor,
                max_rate=config.max_rate,
                bound_ms=config.p99_bound,
            )

        if config.capacity:
            found = search_capacity(fastpost)
            # The same steps and bound on the baseline: capacity against capacity.
            if baseline is not None:
                found_baseline = search_capacity(baseline)

    server_cores = len(config.server_cpus) if config.server_cpus else os.cpu_count() or 1
    fixed_server_cpu = sum(w.cpu for w in fixed_usage.usage) / server_cores
    invalid = []
    if fastpost_run.wrk_cpu > GENERATOR_CPU_LIMIT:
        invalid.append(
            f"wrk used {fastpost_run.wrk_cpu:.0%} of a core on fastpost (limit "
            f"{GENERATOR_CPU_LIMIT:.0%}): the generator set the pace"
        )
    if fixed.generator_cpu > GENERATOR_CPU_LIMIT:
        invalid.append(
            f"the fixed-rate generator used {fixed.generator_cpu:.0%} of a core (limit "
            f"{GENERATOR_CPU_LIMIT:.0%})"
        )
    if baseline_run and baseline_run.wrk_cpu > GENERATOR_CPU_LIMIT:
        notes.append(
            f"wrk used {baseline_run.wrk_cpu:.0%} of a core on the baseline: its req/s is a "
            "floor, so the ratios to it are upper bounds"
        )
    if fixed.achieved_rps < 0.95 * config.rate:
        notes.append(
            f"the fixed-rate run answered {fixed.achieved_rps:,.0f} of {config.rate:g} req/s "
            "offered: the server did not keep up at that rate"
        )
    fastpost_row = _wrk_row(fastpost_run, baseline_run)
    fixed_errors = _fixed_errors(fixed)
    # One denominator: requests attempted, by wrk (answered or lost to a socket error) and
    # by the fixed-rate generator (every scheduled request).
    total_attempted = fastpost_run.attempted + fixed_latency.count
    total_errors = fastpost_row["errors"] + routes.error_count(fixed_errors)
    comparison = (
        capacity_search.compare(found, found_baseline)
        if found is not None and found_baseline is not None
        else None
    )
    measured: dict[str, float | None] = {
        "p50_ms": fixed_latency.p50_ms,
        "p95_ms": fixed_latency.p95_ms,
        "p99_ms": fixed_latency.p99_ms,
        "rps": fastpost_run.rps,
        "server_cpu": fixed_server_cpu,
        "error_rate": total_errors / total_attempted if total_attempted else 0.0,
    }
    if found is not None:
        measured["capacity_rps"] = found.sustained_rps
    if comparison is not None:
        measured["capacity_ratio"] = comparison["ratio"]
    course = targets.judge(targets.COURSE, measured)
    ours = targets.judge(targets.parse_targets(config.targets), measured)

    plot_files = {
        "latency_over_time": plots.latency_over_time(
            fixed.samples,
            out / "latency_over_time.png",
            title=f"{config.scenario} at {config.rate:g} req/s (fixed rate)",
        ).name,
        "latency_histogram": plots.latency_histogram(
            fixed.samples,
            out / "latency_histogram.png",
            title=f"{config.scenario} at {config.rate:g} req/s (fixed rate)",
        ).name,
    }
    if fastpost_run.routes:
        plot_files["wrk_tail_by_route"] = plots.tail_by_route(
            fastpost_run.routes,
            out / "wrk_tail_by_route.png",
            title=f"{config.scenario} under wrk -c{config.connections}: latency tail by route",
        ).name
    plot_files["latency_over_time_by_route"] = plots.p99_over_time_by_route(
        fixed.samples,
        out / "latency_over_time_by_route.png",
        title=f"{config.scenario} at {config.rate:g} req/s (fixed rate): p99 by route",
    ).name
    if found is not None:
        plot_files["capacity"] = plots.capacity_curve(
            found,
            out / "capacity.png",
            title=f"{config.scenario}: latency vs offered rate",
            baseline=found_baseline,
        ).name

    result: dict[str, Any] = {
        "benchmark": "fastpost bench",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "config": asdict(config),
        "method": (
            f"fastpost's and the baseline's workers on core(s) {config.server_cpus or 'any'}, "
            f"wrk and the fixed-rate generator on core {config.client_cpus or 'any'}; "
            f"wrk -t{config.threads} -c{config.connections} "
            f"-d{config.duration:g}s after {config.warmup:g} s warm-up; fixed rate "
            f"{config.rate:g} req/s for {config.fixed_duration:g} s on "
            f"{config.fixed_connections} connections, latency from intended send time; "
            "error rate = errors (timeouts, socket errors, statuses outside 2xx/3xx) / "
            "requests attempted"
        ),
        "pinning": _pinning(config),
        "scenario": {
            "name": config.scenario,
            "requests_in_cycle": len(requests),
            # The list the generators walk in a cycle: its shares are the mix's weights.
            "route_shares": _shares(requests),
            "median_body_bytes": body_bytes,
            "logged_in_users": len(sessions),
        },
        "throughput": {
            "fastpost": fastpost_row,
            "baseline": _wrk_row(baseline_run, baseline_run) if baseline_run else None,
        },
        "fixed_rate": {
            "rate": config.rate,
            "duration_s": config.fixed_duration,
            "achieved_rps": fixed.achieved_rps,
            "attempted": fixed_latency.count,
            "errors_by_type": fixed_errors,
            "routes": routes.fixed_rate_rows(fixed.samples, fixed.elapsed_s),
            "latency": {**asdict(fixed_latency), "error_rate": fixed_latency.error_rate},
            "latency_from_send": asdict(summarise(fixed.samples, from_send=True)),
            "generator_cpu": fixed.generator_cpu,
            "server_cpu": fixed_server_cpu,
            "workers": [asdict(w) for w in fixed_usage.usage],
            "valid": fixed.generator_cpu <= GENERATOR_CPU_LIMIT,
        },
        "server": {"workers": [asdict(w) for w in throughput_usage.usage]},
        "metrics": metrics,
        "generator": {"wrk_cpu": fastpost_run.wrk_cpu, "fixed_rate_cpu": fixed.generator_cpu},
        "capacity": None,
        "baseline_capacity": asdict(found_baseline) if found_baseline is not None else None,
        "verdict": {
            "course": course,
            "ours": ours,
            "course_passed": all(v["passed"] for v in course),
            "ours_passed": all(v["passed"] for v in ours),
        },
        "valid": not invalid,
        "invalid_reasons": invalid,
        "notes": notes + _pinning(config)["shared"],
        "plots": plot_files,
    }
    if found is not None:
        result["capacity"] = {
            **asdict(found),
            "vs_baseline": comparison["ratio"] if comparison else None,
            "vs_baseline_claim": comparison["claim"] if comparison else None,
        }
    report.write_json(result, out / "report.json")
    report.write_markdown(result, out / "report.md")
    return result
