"""The capacity search steps the rate up and stops at the p99 bound or at errors."""

from __future__ import annotations

import pytest

from fastpost.bench.capacity import Step, compare, search


def server_with_knee(
    knee: float, *, errors_above: float | None = None
) -> tuple[list[float], object]:
    """A deterministic server: 10 ms p99 up to `knee` req/s, 800 ms beyond."""
    offered: list[float] = []

    def measure(rate: float) -> Step:
        offered.append(rate)
        slow = rate > knee
        return Step(
            offered_rps=rate,
            achieved_rps=rate,
            p50_ms=400.0 if slow else 5.0,
            p99_ms=800.0 if slow else 10.0,
            requests=int(rate),
            errors=1 if errors_above is not None and rate > errors_above else 0,
            generator_cpu=0.2,
        )

    return offered, measure


def test_capacity_is_the_highest_rate_under_the_p99_bound() -> None:
    offered, measure = server_with_knee(1000)
    found = search(measure, start=100, factor=2, bound_ms=200, refine=2)  # type: ignore[arg-type]
    # 100, 200, 400, 800 pass; 1600 crosses; bisection tries 1200 (crosses) and 1000 (passes).
    assert offered == [100, 200, 400, 800, 1600, 1200, 1000]
    assert found.sustained_rps == 1000
    assert "p99" in found.stopped_because


def test_capacity_search_stops_at_the_first_error() -> None:
    offered, measure = server_with_knee(10_000, errors_above=300)
    found = search(measure, start=100, factor=2, bound_ms=200, refine=0)  # type: ignore[arg-type]
    assert offered == [100, 200, 400]
    assert found.sustained_rps == 200
    assert found.stopped_because == "1 errors"


def test_capacity_is_none_when_the_first_step_already_fails() -> None:
    _, measure = server_with_knee(50)
    found = search(measure, start=100, factor=2, bound_ms=200)  # type: ignore[arg-type]
    assert found.sustained_rps is None
    assert len(found.steps) == 1


def test_a_step_the_server_did_not_keep_up_with_fails() -> None:
    step = Step(1000, 700, 5, 10, 1000, 0, 0.3)
    assert step.failure(200) == "answered 700 of 1,000 req/s"
    assert Step(1000, 1000, 5, 10, 1000, 0, 0.95).failure(200) == "generator at 95% CPU"


def test_capacity_is_compared_with_the_baselines_capacity_found_the_same_way() -> None:
    _, ours = server_with_knee(1000)
    _, theirs = server_with_knee(8000)
    found = search(ours, start=100, factor=2, bound_ms=200, refine=2)  # type: ignore[arg-type]
    baseline = search(theirs, start=100, factor=2, bound_ms=200, refine=2)  # type: ignore[arg-type]

    assert baseline.sustained_rps == 8000
    assert compare(found, baseline) == {
        "ratio": 1000 / 8000,
        "claim": "measured: both searches stopped on the server",
    }


def test_a_baseline_capacity_bounded_by_the_generator_makes_the_ratio_an_upper_bound() -> None:
    _, ours = server_with_knee(1000)
    found = search(ours, start=100, factor=2, bound_ms=200)

    def generator_tops_out(rate: float) -> Step:
        return Step(rate, rate, 1.0, 2.0, int(rate), 0, 0.95 if rate > 3000 else 0.5)

    baseline = search(generator_tops_out, start=100, factor=2, bound_ms=200)
    assert baseline.is_floor
    comparison = compare(found, baseline)
    assert comparison["ratio"] == found.sustained_rps / baseline.sustained_rps
    assert str(comparison["claim"]).startswith("at most")
    with pytest.raises(ValueError, match="different p99 bounds"):
        compare(found, search(generator_tops_out, start=100, factor=2, bound_ms=50))
