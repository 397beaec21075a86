"""wrk: install it, run it pinned, read its output, and measure both sides' CPU."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from fastpost.bench.servers import pin

# Past this the load generator, not the server, sets the pace (Locust warns at 90% CPU for
# the same reason: https://docs.locust.io/en/stable/increasing-request-rate.html).
GENERATOR_CPU_LIMIT = 0.9
LUA_DIR = Path(__file__).parent / "lua"
# Reads the request list written by scenarios.write_requests_file (tokens included).
REQUESTS_SCRIPT = LUA_DIR / "requests.lua"

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class CpuMeasured(Protocol):
    def cpu_seconds(self) -> float: ...


def is_error_status(status: int) -> bool:
    """Count what wrk counts as an answered error: a status outside 2xx and 3xx."""
    return not 200 <= status < 400


@dataclass
class RouteFigures:
    """One route's share of a wrk run, as lua/requests.lua's done() prints it."""

    route: str
    requests: int  # answers received
    statuses: dict[int, int] = field(default_factory=dict)
    # "p50", "p95", "p99", "p99.9", ... -> ms, from the route's own latencies (1% buckets).
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    max_ms: float | None = None
    # Sent and never answered: in flight when wrk stopped, or lost with a socket error.
    unanswered: int = 0

    @property
    def status_errors(self) -> dict[int, int]:
        return {code: n for code, n in sorted(self.statuses.items()) if is_error_status(code)}


@dataclass
class WrkRun:
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float | None  # printed by requests.lua only; wrk itself stops at 50/75/90/99
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout, as wrk prints them
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    routes: list[RouteFigures]
    wrk_cpu: float  # share of one core the generator used
    server_cpu: float  # share of one core the server used (all workers together)
    # Server CPU time per request: unlike req/s it barely moves when another process takes
    # part of the server's core, so it still compares the apps on a busy machine.
    server_cpu_us_per_request: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def attempted(self) -> int:
        """Requests attempted: answered, or lost to a connect, read or write error (a
        timeout is a request still waiting, answered later or in flight at the end)."""
        return self.requests + self.connect_errors + self.read_errors + self.write_errors

    @property
    def error_rate(self) -> float:
        """Errors (statuses outside 2xx/3xx, socket errors, timeouts) / requests attempted."""
        return self.errors / self.attempted if self.attempted else 0.0


def paired_ratios(top: Sequence[WrkRun], bottom: Sequence[WrkRun], key: str) -> list[float]:
    """top[i].key / bottom[i].key for each repeat i, sorted. The machine's other tenants
    move a figure by +-20% from one run to the next; two servers measured back to back in
    one repeat share the disturbance, so their ratio varies less than a ratio of medians."""
    return sorted(getattr(a, key) / getattr(b, key) for a, b in zip(top, bottom, strict=True))


def duration_ms(text: str) -> float:
    """Convert a wrk duration such as `1.86ms` or `2.01s` to milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


@dataclass
class WrkOutput:
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float | None
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    routes: list[RouteFigures] = field(default_factory=list)


def parse_routes(output: str) -> list[RouteFigures]:
    """Read the per-route lines lua/requests.lua prints (`route<TAB>NAME<TAB>KEY<TAB>VALUE`),
    busiest route first."""
    routes: dict[str, RouteFigures] = {}
    for name, key, value in re.findall(r"^route\t([^\t]+)\t([^\t]+)\t(\d+)$", output, re.M):
        figures = routes.setdefault(name, RouteFigures(name, 0))
        if key == "count":
            figures.requests = int(value)
        elif key == "unanswered":
            figures.unanswered = int(value)
        elif key == "max":
            figures.max_ms = int(value) / 1000
        elif key.startswith("status "):
            figures.statuses[int(key.removeprefix("status "))] = int(value)
        elif key.startswith("p"):
            figures.percentiles_ms[key] = int(value) / 1000
    return sorted(routes.values(), key=lambda r: (-r.requests, r.route))


def parse_wrk(output: str) -> WrkOutput:
    """Read requests/s, latency percentiles, request count and errors from `wrk --latency`."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    percentiles = {
        int(p): duration_ms(value)
        for p, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)
    }
    latency = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and latency and total and {50, 90, 99} <= percentiles.keys()):
        raise ValueError(f"could not read wrk output:\n{output}")
    # requests.lua's done() prints "percentile 95: <microseconds>".
    extra = {
        float(p): float(us) / 1000
        for p, us in re.findall(r"^percentile ([\d.]+): (\d+)", output, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    connect, read, write, timeout = (int(n) for n in sockets.groups()) if sockets else (0,) * 4
    return WrkOutput(
        rps=float(rps[1]),
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p95_ms=extra.get(95.0),
        p99_ms=percentiles[99],
        max_ms=duration_ms(latency[3]),
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=connect + read + write + timeout,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        routes=parse_routes(output),
    )


def ensure_wrk(console: Console | None = None) -> str:
    """Return wrk's path, installing it with apt-get when we may; exit with advice if not."""
    console = console or Console()
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        console.print("wrk is missing: installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(install, env=env, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    console.print(
        "[red]wrk is not installed.[/red] Install it with `sudo apt-get install -y wrk` "
        "(Debian/Ubuntu), `brew install wrk` (macOS), or build it from "
        "https://github.com/wg/wrk, then run this again."
    )
    raise SystemExit(2)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_command(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    cpu: Sequence[int] | int | None = None,
    headers: Sequence[str] = (),
    script: Path | None = None,
    script_args: Sequence[str] = (),
    timeout_s: float | None = None,
) -> list[str]:
    """Return the wrk command line (pinned when `cpu` is given)."""
    cpus = [cpu] if isinstance(cpu, int) else cpu
    return [
        *pin(cpus),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        # wrk reads whole seconds only ("0.5s" is a usage error).
        f"-d{max(1, round(seconds))}s",
        "--latency",
        *([f"--timeout={timeout_s:g}s"] if timeout_s else []),
        *(arg for header in headers for arg in ("-H", header)),
        *(["-s", str(script)] if script else []),
        url,
        *(["--", *script_args] if script_args else []),
    ]


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    cpu: Sequence[int] | int | None,
    server: CpuMeasured,
    headers: Sequence[str] = (),
    script: Path | None = None,
    script_args: Sequence[str] = (),
    timeout_s: float | None = None,
) -> WrkRun:
    """Load `url` for `seconds` and return what wrk measured, with both sides' CPU use."""
    command = wrk_command(
        url,
        seconds=seconds,
        connections=connections,
        threads=threads,
        cpu=cpu,
        headers=headers,
        script=script,
        script_args=script_args,
        timeout_s=timeout_s,
    )
    return _measure([(command, server)])[0]


def run_wrk_together(
    targets: Sequence[tuple[str, CpuMeasured]],
    *,
    seconds: float,
    connections: int,
    threads: int,
    cpu: Sequence[int] | int | None,
) -> list[WrkRun]:
    """Load each (url, server) with a wrk of its own, all at the same time, and return
    what each measured, in order.

    Servers pinned to one core then split its time evenly (the kernel's fair scheduler), so
    each serves in proportion to how little CPU a request costs it, and whatever else the
    machine does in those seconds slows them all alike. Their ratio of requests per second
    is the inverse ratio of their CPU per request, measured under one disturbance instead
    of several: it varies far less between runs than that of servers measured one after
    another (benchmarks/bench_observability.py prints the range of both). (`wrk_cpu` is the
    generators' share, split evenly.)
    """
    return _measure(
        [
            (
                wrk_command(
                    url, seconds=seconds, connections=connections, threads=threads, cpu=cpu
                ),
                server,
            )
            for url, server in targets
        ]
    )


def _measure(runs: Sequence[tuple[list[str], CpuMeasured]]) -> list[WrkRun]:
    """Run the wrk commands at once; return each one's figures and its server's CPU use."""
    wrk_before, started = _children_cpu_seconds(), time.time()
    servers_before = [server.cpu_seconds() for _, server in runs]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command, _ in runs
    ]
    outputs = [process.communicate() for process in processes]
    elapsed = time.time() - started
    wrk_share = (_children_cpu_seconds() - wrk_before) / elapsed / len(runs)
    measured = []
    for process, (stdout, stderr), (_, server), server_before in zip(
        processes, outputs, runs, servers_before, strict=True
    ):
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {stderr or stdout}")
        server_seconds = server.cpu_seconds() - server_before
        figures = parse_wrk(stdout)
        measured.append(
            WrkRun(
                **{**asdict(figures), "routes": figures.routes},
                wrk_cpu=wrk_share,
                server_cpu=server_seconds / elapsed,
                server_cpu_us_per_request=server_seconds * 1e6 / max(figures.requests, 1),
            )
        )
    return measured
