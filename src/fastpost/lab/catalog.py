"""The experiments by number and name: what `--only` chooses from (no heavy imports, so
that the `fastpost` command starts fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    number: int
    name: str
    module: str  # fastpost.lab.<module>, whose `run(lab)` measures it
    needs_database: bool

    def __str__(self) -> str:
        return f"{self.number} {self.name}"


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(1, "n_plus_one", "n_plus_one", True),
    Experiment(2, "gather", "gather", True),
    Experiment(3, "membership", "membership", False),
    Experiment(4, "pagination", "pagination", True),
    Experiment(5, "index", "indexes", True),
    Experiment(6, "cache", "caching", True),
    Experiment(7, "cpu_bound", "cpu_bound", False),
    Experiment(8, "streaming", "streaming", True),
    Experiment(9, "outbound_http", "outbound_http", False),
)


def select_experiments(only: str | None) -> list[Experiment]:
    """Experiments named in `only` ("1,3,cache"), by number or name; all when None."""
    if not only:
        return list(EXPERIMENTS)
    wanted = {part.strip().lower() for part in only.split(",") if part.strip()}
    known = {str(e.number) for e in EXPERIMENTS} | {e.name for e in EXPERIMENTS}
    unknown = sorted(wanted - known)
    if unknown:
        names = ", ".join(map(str, EXPERIMENTS))
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; choose from {names}")
    return [e for e in EXPERIMENTS if str(e.number) in wanted or e.name in wanted]
