"""3. Membership tests in a list against a set, at growing sizes (pure Python, timeit)."""

from __future__ import annotations

import random
import sys
import timeit
from collections.abc import Collection

from fastpost.lab.context import Lab
from fastpost.lab.measure import median
from fastpost.lab.result import ExperimentResult, Measurement

PROBES = 20
ROUND_SECONDS = 0.02


def probes(size: int, seed: int = 42) -> list[int]:
    """Values to look up: half of them present at random places, half absent."""
    rng = random.Random(seed)
    present = [rng.randrange(size) for _ in range(PROBES // 2)]
    absent = [size + rng.randrange(size) for _ in range(PROBES - PROBES // 2)]
    return present + absent


def lookup_seconds(container: Collection[int], values: list[int], repeat: int) -> float:
    """Median seconds per `value in container`, over `repeat` timeit rounds."""

    def lookups() -> int:
        return sum(1 for v in values if v in container)

    timer = timeit.Timer(lookups)
    # Enough calls per round for the clock to resolve: at least ROUND_SECONDS a round.
    # (timeit's own autorange aims at 0.2 s, which made the small sizes take seconds.)
    number = 1
    while timer.timeit(number) < ROUND_SECONDS:
        number *= 10
    rounds = timer.repeat(repeat=max(1, repeat), number=number)
    return median([r / number / len(values) for r in rounds])


def membership(sizes: tuple[int, ...], repeat: int) -> ExperimentResult:
    """Time `in` on a list and on a set holding the same integers, at each size."""
    result = ExperimentResult(
        key="membership",
        title="3. Membership: list vs set",
        why="`x in list` compares against every element (O(n)); a set hashes once (O(1))",
    )
    for size in sizes:
        values = probes(size)
        as_list = list(range(size))
        as_set = set(as_list)
        assert sum(v in as_list for v in values) == sum(v in as_set for v in values)
        label = f"{size:,} items"
        for name, container, is_fix in (("list", as_list, False), ("set", as_set, True)):
            seconds = lookup_seconds(container, values, repeat)
            result.add(
                Measurement(
                    f"x in {name}",
                    label,
                    seconds * 1000,
                    memory_bytes=sys.getsizeof(container),
                    is_fix=is_fix,
                    details={"per": "lookup", "ns_per_lookup": round(seconds * 1e9, 1)},
                )
            )
        del as_list, as_set
    result.set_ratios()
    largest = f"{sizes[-1]:,} items"
    ratio = result.variant("x in list", largest).ratio or 0
    result.verdict = (
        f"at {sizes[-1]:,} items a list lookup takes {ratio:,.0f}x a set lookup; the set "
        "costs more memory (its own hash table)"
    )
    result.verdict_params = {"items": sizes[-1], "ratio": ratio}
    return result


async def run(lab: Lab) -> ExperimentResult:
    """Time membership in a list and in a set at each configured size."""
    return membership(lab.config.list_sizes, lab.repeat)
