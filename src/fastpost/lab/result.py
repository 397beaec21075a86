"""What an experiment reports: one measurement per variant and size, and a verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fastpost.messages import text


@dataclass
class Measurement:
    """One variant of an experiment at one size, as measured."""

    variant: str
    size: str
    time_ms: float | None
    queries: int | None = None
    memory_bytes: int | None = None
    # The p99 of how late a task sleeping 1 ms beside the variant woke up: what every other
    # request on the worker would have waited (fastpost.lab.measure.LoopLagProbe, the way
    # fastpost_event_loop_lag_seconds is measured in a server). Only where the loop is the
    # lesson: blocking I/O and CPU-bound work.
    loop_lag_ms: float | None = None
    # This measurement's key figure divided by the fix's at the same size (see
    # ExperimentResult.ratio_of); 1.0 for the fix itself.
    ratio: float | None = None
    is_fix: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # The note as a message of fastpost.messages, for the report's other languages.
    note_key: str = ""
    note_params: dict[str, Any] = field(default_factory=dict)
    # The variant ran the very statement the fix ran: any ratio between them is noise.
    same_statement: bool = False


@dataclass
class ExperimentResult:
    """An experiment's measurements, what its ratio compares, and what it shows."""

    key: str
    title: str
    why: str
    ratio_of: str = "time"
    measurements: list[Measurement] = field(default_factory=list)
    verdict: str = ""
    # The figures in the verdict, for its other languages (fastpost.messages, lab.KEY.verdict).
    verdict_params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Which notes are messages of fastpost.messages (by position in `notes`), with their
    # figures, for the report's other languages; the rest (query plans) print as they are.
    note_keys: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # Anything else worth keeping in the JSON (query plans, say).
    extra: dict[str, Any] = field(default_factory=dict)

    def add_note(self, key: str, **params: Any) -> None:
        """Add the message `key` of fastpost.messages as a note, in English here."""
        self.note_keys[len(self.notes)] = (key, params)
        self.notes.append(text(key, "en", **params))

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement

    def variant(self, name: str, size: str | None = None) -> Measurement:
        """The measurement of a variant (at a size, when there are several)."""
        for m in self.measurements:
            if m.variant == name and (size is None or m.size == size):
                return m
        raise KeyError((name, size))

    def set_ratios(self, figure: str = "time_ms") -> None:
        """Divide each measurement's `figure` by the fix's at the same size."""
        fixes = {m.size: getattr(m, figure) for m in self.measurements if m.is_fix}
        for m in self.measurements:
            value, fix = getattr(m, figure), fixes.get(m.size)
            if value is not None and fix and not m.same_statement:
                m.ratio = value / fix


@dataclass
class LabReport:
    """Everything one `fastpost lab` run measured, with the set-up it ran on."""

    environment: dict[str, Any]
    experiments: list[ExperimentResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
