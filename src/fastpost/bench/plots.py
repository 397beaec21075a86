"""PNG plots of a bench run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from fastpost.bench.capacity import Capacity
from fastpost.bench.latency import Sample, per_second, percentile
from fastpost.bench.wrk import RouteFigures

# Percentiles drawn in a tail plot, in "nines" (p99.9 is 3 nines) for an even x axis.
TAIL_PERCENTILES = ("p50", "p75", "p90", "p95", "p99", "p99.9", "p99.99")


def latency_over_time(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot p50 and p99 of each second of the fixed-rate run (by intended send time)."""
    series = per_second(samples)
    seconds = [row["second"] for row in series]
    with _plot(
        path, title=title, xlabel="second of the run", ylabel="latency from intended send, ms"
    ) as axes:
        axes.plot(seconds, [row["p50_ms"] for row in series], marker="o", label="p50")
        axes.plot(seconds, [row["p99_ms"] for row in series], marker="o", label="p99")
        axes.set_ylim(bottom=0)
    return path


def latency_histogram(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot the distribution of latencies (from intended send), log-scaled counts."""
    values = [s.latency_s * 1000 for s in samples]
    with _plot(
        path,
        title=title,
        xlabel="latency from intended send, ms",
        ylabel="requests",
        legend=False,
    ) as axes:
        axes.hist(values, bins=60, color="tab:blue")
        axes.set_yscale("log")
    return path


def tail_by_route(routes: Sequence[RouteFigures], path: Path, *, title: str) -> Path:
    """Plot each route's latency percentiles under wrk, p50 to p99.99, on a "nines" axis."""
    nines = [math.log10(100 / (100 - float(p[1:]))) for p in TAIL_PERCENTILES]
    with _plot(path, title=title, xlabel="percentile", ylabel="latency from send, ms") as axes:
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
    return path


def p99_over_time_by_route(samples: Sequence[Sample], path: Path, *, title: str) -> Path:
    """Plot each route's p99 for each second of the fixed-rate run (by intended send time)."""
    by_route: dict[str, dict[int, list[float]]] = {}
    for sample in samples:
        seconds = by_route.setdefault(sample.route or "?", {})
        seconds.setdefault(int(sample.intended_s), []).append(sample.latency_s * 1000)
    with _plot(
        path, title=title, xlabel="second of the run", ylabel="p99 from intended send, ms"
    ) as axes:
        for route, seconds in sorted(by_route.items()):
            xs = sorted(seconds)
            axes.plot(xs, [percentile(sorted(seconds[x]), 99) for x in xs], marker="o", label=route)
        axes.set_ylim(bottom=0)
    return path


def capacity_curve(
    capacity: Capacity, path: Path, *, title: str, baseline: Capacity | None = None
) -> Path:
    """Plot p50 and p99 against the offered rate, with the bound and the capacity found
    (and the baseline's, searched the same way)."""
    servers = (
        ("fastpost", capacity, "-", ("tab:blue", "tab:orange")),
        ("baseline", baseline, "--", ("tab:green", "tab:purple")),
    )
    with _plot(path, title=title, xlabel="offered rate, requests/s", ylabel="latency, ms") as axes:
        for name, found, style, (p50_color, p99_color) in servers:
            if found is None:
                continue
            steps = sorted(found.steps, key=lambda s: s.offered_rps)
            rates = [s.offered_rps for s in steps]
            for quantile, color, latencies in (
                ("p50", p50_color, [s.p50_ms for s in steps]),
                ("p99", p99_color, [s.p99_ms for s in steps]),
            ):
                axes.plot(
                    rates, latencies, style, color=color, marker="o", label=f"{name} {quantile}"
                )
            if found.sustained_rps is not None:
                axes.axvline(
                    found.sustained_rps, color=p99_color, linestyle=":", label=f"{name} capacity"
                )
        axes.axhline(capacity.bound_ms, color="black", linestyle="-.", label="p99 bound")
        axes.set_xscale("log")
        axes.set_yscale("log")
    return path


@contextmanager
def _plot(
    path: Path, *, title: str, xlabel: str, ylabel: str, legend: bool = True
) -> Iterator[Axes]:
    """Yield the axes of a new 8 by 4 inch figure; once they are drawn, label and grid them and
    write the figure to `path` as a PNG. The figure is closed either way."""
    figure, axes = plt.subplots(figsize=(8, 4))
    try:
        yield axes
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        if legend:
            axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
