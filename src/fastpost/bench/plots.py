"""PNG plots of a bench run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from fastpost.bench.capacity import Capacity
from fastpost.bench.latency import Sample, per_second, percentile
from fastpost.bench.wrk import RouteFigures

# Percentiles drawn in a tail plot, in "nines" (p99.9 is 3 nines) for an even x axis.
TAIL_PERCENTILES = ("p50", "p75", "p90", "p95", "p99", "p99.9", "p99.99")


def latency_over_time(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot p50 and p99 of each second of the fixed-rate run (by intended send time)."""
    series = per_second(samples)
    seconds = [row["second"] for row in series]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(seconds, [row["p50_ms"] for row in series], marker="o", label="p50")
    axes.plot(seconds, [row["p99_ms"] for row in series], marker="o", label="p99")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("latency from intended send, ms")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def latency_histogram(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot the distribution of latencies (from intended send), log-scaled counts."""
    values = [s.latency_s * 1000 for s in samples]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.hist(values, bins=60, color="tab:blue")
    axes.set_yscale("log")
    axes.set_xlabel("latency from intended send, ms")
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def tail_by_route(routes: Sequence[RouteFigures], path: Path, *, title: str) -> Path:
    """Plot each route's latency percentiles under wrk, p50 to p99.99, on a "nines" axis."""
    figure, axes = plt.subplots(figsize=(8, 4))
    nines = [math.log10(100 / (100 - float(p[1:]))) for p in TAIL_PERCENTILES]
    for route in routes:
        points = [
            (x, route.percentiles_ms[p])
            for x, p in zip(nines, TAIL_PERCENTILES, strict=True)
            if p in route.percentiles_ms
        ]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=f"{route.route}")
    axes.set_xticks(nines, list(TAIL_PERCENTILES))
    axes.set_yscale("log")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency from send, ms")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def p99_over_time_by_route(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot each route's p99 for each second of the fixed-rate run (by intended send time)."""
    by_route: dict[str, dict[int, list[float]]] = {}
    for sample in samples:
        seconds = by_route.setdefault(sample.route or "?", {})
        seconds.setdefault(int(sample.intended_s), []).append(sample.latency_s * 1000)
    figure, axes = plt.subplots(figsize=(8, 4))
    for route, seconds in sorted(by_route.items()):
        xs = sorted(seconds)
        axes.plot(xs, [percentile(sorted(seconds[x]), 99) for x in xs], marker="o", label=route)
    axes.set_xlabel("second of the run")
    axes.set_ylabel("p99 from intended send, ms")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def capacity_curve(
    capacity: Capacity, path: Path, *, title: str, baseline: Capacity | None = None
) -> Path:
    """Plot p50 and p99 against the offered rate, with the bound and the capacity found
    (and the baseline's, searched the same way)."""
    figure, axes = plt.subplots(figsize=(8, 4))
    servers = (
        ("fastpost", capacity, "-", ("tab:blue", "tab:orange")),
        ("baseline", baseline, "--", ("tab:green", "tab:purple")),
    )
    for name, found, style, (p50_color, p99_color) in servers:
        if found is None:
            continue
        steps = sorted(found.steps, key=lambda s: s.offered_rps)
        rates = [s.offered_rps for s in steps]
        axes.plot(
            rates,
            [s.p50_ms for s in steps],
            style,
            color=p50_color,
            marker="o",
            label=f"{name} p50",
        )
        axes.plot(
            rates,
            [s.p99_ms for s in steps],
            style,
            color=p99_color,
            marker="o",
            label=f"{name} p99",
        )
        if found.sustained_rps is not None:
            axes.axvline(
                found.sustained_rps, color=p99_color, linestyle=":", label=f"{name} capacity"
            )
    axes.axhline(capacity.bound_ms, color="black", linestyle="-.", label="p99 bound")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate, requests/s")
    axes.set_ylabel("latency, ms")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
