"""Targets a run is judged against: the course's, and our own stricter ones.

Latency and server CPU are judged on the fixed-rate run (latency from the intended send
time, at the normal load); requests/s on the wrk run; the error rate over both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str  # p95_ms, p99_ms, rps, server_cpu, error_rate
    limit: float
    what: str

    @property
    def higher_is_better(self) -> bool:
        return self.name == "rps"

    def passed(self, measured: float) -> bool:
        """Tell whether `measured` meets the target."""
        return measured > self.limit if self.higher_is_better else measured <= self.limit


MEASURES = {
    "p50_ms": "p50 latency at the fixed rate, ms",
    "p95_ms": "p95 latency at the fixed rate, ms",
    "p99_ms": "p99 latency at the fixed rate, ms",
    "rps": "requests/s under wrk",
    "server_cpu": "server CPU at the fixed rate, share of its cores",
    "error_rate": "errors / requests",
}
# The course: latency under 200 ms, more than 1000 req/s for simple APIs, CPU under 70% at
# normal load, 99.9% availability.
COURSE = (
    Target("p95_ms", 200.0, MEASURES["p95_ms"]),
    Target("rps", 1000.0, MEASURES["rps"]),
    Target("server_cpu", 0.70, MEASURES["server_cpu"]),
    Target("error_rate", 0.001, MEASURES["error_rate"]),
)
# Ours, stricter; each can be changed with --target NAME=VALUE.
OURS = {
    "p95_ms": 50.0,
    "p99_ms": 100.0,
    "rps": 2000.0,
    "server_cpu": 0.50,
    "error_rate": 0.0,
}


def parse_targets(options: list[str]) -> tuple[Target, ...]:
    """Return our targets with `NAME=VALUE` overrides applied."""
    limits = dict(OURS)
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in MEASURES:
            raise ValueError(f"--target takes NAME=VALUE with NAME in {', '.join(MEASURES)}")
        limits[name] = float(value)
    return tuple(Target(name, limit, MEASURES[name]) for name, limit in limits.items())


def judge(targets: tuple[Target, ...], measured: dict[str, float]) -> list[dict[str, object]]:
    """Return one verdict per target: its limit, what was measured, and pass or fail."""
    return [
        {
            "name": t.name,
            "what": t.what,
            "limit": t.limit,
            "comparison": ">" if t.higher_is_better else "<=",
            "measured": measured[t.name],
            "passed": t.passed(measured[t.name]),
        }
        for t in targets
    ]
