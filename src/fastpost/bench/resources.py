"""CPU and memory of the server's workers over a run, sampled with psutil."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]


@dataclass
class WorkerUsage:
    pid: int
    cpu: float  # share of one core over the run (1.0 = a whole core)
    rss_mb: float  # the highest resident set size sampled


class WorkerSampler:
    """Sample the server's worker processes in a thread while a run lasts.

    CPU is the difference of each process's CPU times between start and stop; memory is
    the peak of RSS samples taken every `interval` seconds.
    """

    def __init__(self, pids: Callable[[], list[int]], *, interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self._processes: dict[int, Any] = {}
        self._cpu_before: dict[int, float] = {}
        self._rss: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_forever, daemon=True)
        self._started = 0.0
        self.usage: list[WorkerUsage] = []

    def __enter__(self) -> WorkerSampler:
        for pid in self._pids():
            try:
                process = psutil.Process(pid)
                self._cpu_before[pid] = _cpu(process)
            except psutil.Error:
                continue
            self._processes[pid] = process
        self._started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._sample()
        usage = []
        for pid, process in self._processes.items():
            try:
                cpu = _cpu(process) - self._cpu_before[pid]
            except psutil.Error:
                continue
            usage.append(WorkerUsage(pid, cpu / elapsed, self._rss.get(pid, 0) / 2**20))
        self.usage = usage

    def _sample(self) -> None:
        for pid, process in self._processes.items():
            try:
                rss = int(process.memory_info().rss)
            except psutil.Error:
                continue
            self._rss[pid] = max(self._rss.get(pid, 0), rss)

    def _sample_forever(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
