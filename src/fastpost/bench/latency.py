"""Latency samples of the fixed-rate generator: percentiles and per-second series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Return the nearest-rank `p`th percentile of values sorted in ascending order."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


@dataclass(frozen=True)
class Sample:
    """One request: when it should have gone out, and how long it took from then."""

    intended_s: float  # seconds from the start of the schedule
    latency_s: float  # from the intended send time to the end of the response
    service_s: float  # from the actual send to the end of the response (what wrk sees)
    status: int  # HTTP status; 0 for a connection error or no answer in time
    route: str = ""  # the request's route (requests_file.route_of)
    error: str = ""  # for status 0: connect, write, read or timeout (fixed_rate.drive)


@dataclass(frozen=True)
class LatencySummary:
    count: int
    errors: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0


def is_error(status: int) -> bool:
    """Count what wrk counts: no answer, or a status outside 2xx and 3xx."""
    return not 200 <= status < 400


def summarise(samples: Sequence[Sample], *, from_send: bool = False) -> LatencySummary:
    """Summarise latencies from the intended send time (or, `from_send`, from the real one)."""
    values = sorted((s.service_s if from_send else s.latency_s) * 1000 for s in samples)
    return LatencySummary(
        count=len(samples),
        errors=sum(1 for s in samples if is_error(s.status)),
        p50_ms=percentile(values, 50),
        p90_ms=percentile(values, 90),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=values[-1] if values else math.nan,
    )


def per_second(samples: Sequence[Sample]) -> list[dict[str, float]]:
    """Return p50 and p99 (ms) and the request count for each second of the schedule."""
    seconds: dict[int, list[float]] = {}
    for sample in samples:
        seconds.setdefault(int(sample.intended_s), []).append(sample.latency_s * 1000)
    series = []
    for second in sorted(seconds):
        values = sorted(seconds[second])
        series.append(
            {
                "second": float(second),
                "requests": float(len(values)),
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
            }
        )
    return series
