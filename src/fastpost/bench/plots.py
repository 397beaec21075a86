"""PNG plots of a bench run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from fastpost.bench.capacity import Capacity
from fastpost.bench.latency import Sample, per_second


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


def capacity_curve(capacity: Capacity, path: Path, *, title: str) -> Path:
    """Plot p50 and p99 against the offered rate, with the bound and the capacity found."""
    steps = sorted(capacity.steps, key=lambda s: s.offered_rps)
    rates = [s.offered_rps for s in steps]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(rates, [s.p50_ms for s in steps], marker="o", label="p50")
    axes.plot(rates, [s.p99_ms for s in steps], marker="o", label="p99")
    axes.axhline(capacity.bound_ms, color="tab:red", linestyle="--", label="p99 bound")
    if capacity.sustained_rps is not None:
        axes.axvline(capacity.sustained_rps, color="tab:green", linestyle=":", label="capacity")
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
