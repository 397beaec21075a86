"""Capacity: the highest offered rate served within the p99 bound, without errors.

The offered rate grows geometrically until a step fails (p99 over the bound, an error, the
server answering less than it was offered, or the generator out of CPU); then the gap
between the last passing and the first failing rate is bisected a few times.

fastpost's capacity is compared with the baseline's found the same way (same steps, same
bound, same generator): an open-loop capacity over a closed-loop wrk throughput would
compare two different things.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A step whose answers fall short of the offered rate by more than this did not keep up.
ACHIEVED_SHARE = 0.95
GENERATOR_CPU_LIMIT = 0.9


@dataclass
class Step:
    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    generator_cpu: float

    def failure(self, bound_ms: float) -> str | None:
        """Return why this step is beyond capacity, or None when it passed."""
        if self.generator_cpu > GENERATOR_CPU_LIMIT:
            return f"generator at {self.generator_cpu:.0%} CPU"
        if self.errors:
            return f"{self.errors} errors"
        if self.p99_ms > bound_ms:
            return f"p99 {self.p99_ms:.1f} ms > {bound_ms:g} ms"
        if self.achieved_rps < ACHIEVED_SHARE * self.offered_rps:
            return f"answered {self.achieved_rps:,.0f} of {self.offered_rps:,.0f} req/s"
        return None


@dataclass
class Capacity:
    bound_ms: float
    sustained_rps: float | None  # None: even the first step failed
    stopped_because: str
    steps: list[Step] = field(default_factory=list)

    @property
    def is_floor(self) -> bool:
        """True when the search stopped on the generator's CPU or at --max-rate, not on the
        server: the server can do at least this much, perhaps more."""
        return self.stopped_because.startswith(("generator", "reached"))


def compare(ours: Capacity, baseline: Capacity) -> dict[str, Any]:
    """Return fastpost's capacity over the baseline's, with what the ratio can claim."""
    if ours.bound_ms != baseline.bound_ms:
        raise ValueError("capacities under different p99 bounds do not compare")
    if not (ours.sustained_rps and baseline.sustained_rps):
        return {"ratio": None, "claim": "no ratio: a search passed no step"}
    ratio = ours.sustained_rps / baseline.sustained_rps
    limit = "the generator or --max-rate, not on the server"
    if baseline.is_floor and not ours.is_floor:
        claim = f"at most: the baseline's search stopped on {limit}"
    elif ours.is_floor and not baseline.is_floor:
        claim = f"at least: fastpost's search stopped on {limit}"
    elif ours.is_floor:
        claim = f"unknown: both searches stopped on {limit}"
    else:
        claim = "measured: both searches stopped on the server"
    return {"ratio": ratio, "claim": claim}


def search(
    measure: Callable[[float], Step],
    *,
    start: float,
    factor: float = 1.5,
    max_rate: float = 100_000,
    bound_ms: float = 200.0,
    refine: int = 2,
) -> Capacity:
    """Step the offered rate up with `measure(rate)` and return the highest that passed."""
    if start <= 0 or factor <= 1:
        raise ValueError("start must be positive and factor above 1")
    steps: list[Step] = []
    passed: float | None = None
    failed: float | None = None
    reason = f"reached --max-rate {max_rate:g}"
    rate = start
    while rate <= max_rate:
        step = measure(rate)
        steps.append(step)
        why = step.failure(bound_ms)
        if why:
            failed, reason = rate, why
            break
        passed = rate
        rate *= factor
    if passed is not None and failed is not None:
        for _ in range(refine):
            middle = (passed + failed) / 2
            step = measure(middle)
            steps.append(step)
            why = step.failure(bound_ms)
            if why:
                failed, reason = middle, why
            else:
                passed = middle
    return Capacity(bound_ms, passed, reason, steps)
