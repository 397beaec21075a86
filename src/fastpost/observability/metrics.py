"""Every Prometheus metric fastpost exports, with fixed label sets, and /metrics.

Several workers (`fastpost serve --workers N`) share one registry through prometheus_client's
multiprocess mode: each process writes its samples to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR`, and a scrape, whichever worker answers it, reads them all. The
rules that make this correct (prometheus_client's documentation of multiprocess mode, and
its issues 275 and 793):
- the launcher (`fastpost serve`) creates and empties the folder and sets the variable
  before any worker imports prometheus_client; the value class is chosen at import;
- a registry is built per scrape, never the default one, which holds this process only;
- every gauge names its multiprocess mode;
- files of dead workers are reaped at each scrape (`reap_dead_workers`): their counters
  and histograms are folded into one archive file per type, so totals never go back, and
  their live gauges are dropped. Plain `uvicorn --workers` has no child-exit hook to do it.

The cache calls `cache_event(cache, tier, event)`:
    metrics.cache_event("posts", "local", "hit")    # event: hit, miss, load, invalidation
`tier` is where it happened ("local" for in-process, "redis"); `load` has no tier (the
loader ran: a miss in every tier). A hit or miss also counts towards the access log line of
the current request. Like every count on the request path it is a dict update, folded into
the shared files within `metrics_flush_seconds` (see "the hot path" below).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import os
import re
import resource
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    mmap_dict,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import Response

from fastpost.observability.request_stats import RequestStats, current_request
from fastpost.observability.served import method_of, route_of

# prometheus_client's multiprocess internals carry no type hints.
_multiprocess: Any = multiprocess
_mmap_dict: Any = mmap_dict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# The metric objects below, and the tallies that fold into them, are module-level on
# purpose: prometheus_client's registry (and, with several workers, its files) is
# process-wide, so a metric is one per process whatever the number of apps. What is an
# app's own (its served requests, access log, statement recorder) is on its Observability
# (fastpost.observability.state).

# 1 ms to 10 s; 0.2 is there so that the p95 > 200 ms alert reads a bucket boundary.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

http_requests_total = Counter(
    "http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time from request to the end of the response.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
http_requests_in_progress = Gauge(
    "http_requests_in_progress",
    "Requests being served.",
    ["method", "route"],
    multiprocess_mode="livesum",
)
db_queries_total = Counter("db_queries_total", "SQL statements executed.", ["operation"])
db_query_duration_seconds = Histogram(
    "db_query_duration_seconds",
    "Time to execute one SQL statement.",
    ["operation"],
    buckets=QUERY_BUCKETS,
)
db_pool_connections = Gauge(
    "db_pool_connections",
    "Database pool connections by state (checked_out, size, overflow), summed over workers.",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
# Read replicas (fastpost.replicas), labelled host:port. Each worker checks every replica;
# the worst view of a live worker counts.
db_replica_lag_seconds = Gauge(
    "db_replica_lag_seconds",
    "How far a replica's data is behind the primary's (+Inf: unreachable).",
    ["replica"],
    multiprocess_mode="livemax",
)
db_replica_in_rotation = Gauge(
    "db_replica_in_rotation",
    "1 when a replica takes reads, 0 when it is out of rotation (in any live worker).",
    ["replica"],
    multiprocess_mode="livemin",
)
db_reads_total = Counter(
    "db_reads_total",
    "Reads by the server that ran them (a replica's host:port, or primary) and why.",
    ["target", "reason"],
)
cache_hits_total = Counter("cache_hits_total", "Cache hits.", ["cache", "tier"])
cache_misses_total = Counter("cache_misses_total", "Cache misses.", ["cache", "tier"])
cache_loads_total = Counter("cache_loads_total", "Values loaded on a miss.", ["cache"])
cache_invalidations_total = Counter(
    "cache_invalidations_total", "Cache entries invalidated.", ["cache", "tier"]
)
# The default process collector does not work in multiprocess mode: these take its place,
# one series per live worker.
worker_cpu_seconds_total = Gauge(
    "fastpost_worker_cpu_seconds_total",
    "CPU time (user + system) of a worker process.",
    ["pid"],
    multiprocess_mode="liveall",
)
worker_resident_memory_bytes = Gauge(
    "fastpost_worker_resident_memory_bytes",
    "Resident memory of a worker process.",
    ["pid"],
    multiprocess_mode="liveall",
)
# How late each worker's event loop runs a timer that is due (fastpost.observability.loop_lag):
# whatever blocks the loop delays every request in flight on it by as much. The gauge is the
# last check of each live worker; the histogram counts every check of every worker, so that
# an alert can read a quantile over minutes (a gauge sampled every 15 s misses most stalls).
# 0.1 is a bound so that the p99 > 100 ms alert reads a bucket boundary.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
event_loop_lag_seconds = Gauge(
    "fastpost_event_loop_lag_seconds",
    "How late a worker's event loop ran a due timer, at its last check.",
    ["pid"],
    multiprocess_mode="liveall",
)
event_loop_lag_distribution_seconds = Histogram(
    "fastpost_event_loop_lag_distribution_seconds",
    "How late the event loop ran a due timer, every check of every worker.",
    buckets=LOOP_LAG_BUCKETS,
)

EXPORTED_METRICS = frozenset(
    {
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "db_queries_total",
        "db_query_duration_seconds",
        "db_pool_connections",
        "db_replica_lag_seconds",
        "db_replica_in_rotation",
        "db_reads_total",
        "cache_hits_total",
        "cache_misses_total",
        "cache_loads_total",
        "cache_invalidations_total",
        "fastpost_worker_cpu_seconds_total",
        "fastpost_worker_resident_memory_bytes",
        "fastpost_event_loop_lag_seconds",
        "fastpost_event_loop_lag_distribution_seconds",
    }
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


# --- the hot path: tallies in plain Python, flushed into the registry -------------------
#
# In multiprocess mode every inc() or observe() takes a lock and writes a memory-mapped
# file: several of those per request (a counter, a histogram, the in-progress gauge) would
# weigh on a request that does no I/O as much as a good part of the rest of it
# (benchmarks/bench_observability.py runs the layer in multiprocess mode, as `fastpost
# serve` does, against the same app without it). The request path adds to dicts of plain
# numbers instead, and each worker folds them into the registry every
# `metrics_flush_seconds` (and the worker answering a scrape, at once). A scrape therefore
# sees the other workers' last second late, and a killed worker loses its last second.
# A served request is not even counted as it ends: its record is counted with its batch
# (`count_served`, a sink of fastpost.observability.served).


class BatchedCounter:
    """Counts by label values, for a Counter."""

    __slots__ = ("metric", "pending")

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self.pending: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        pending = self.pending
        pending[labels] = pending.get(labels, 0.0) + amount

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, amount in pending.items():
            self.metric.labels(*labels).inc(amount)


class BatchedHistogram:
    """Observations by label values, for a Histogram with these buckets."""

    __slots__ = ("bounds", "metric", "pending")

    def __init__(self, metric: Histogram, buckets: tuple[float, ...]) -> None:
        self.metric = metric
        self.bounds = (*buckets, float("inf"))
        # label values -> [sum, count in bucket 0, count in bucket 1, ...]
        self.pending: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        self.add(labels, bisect.bisect_left(self.bounds, value), 1, value)

    def add(self, labels: tuple[str, ...], bucket: int, count: int, total: float) -> None:
        """Add `count` observations in the bucket of index `bucket` in `bounds`, which sum to
        `total`."""
        entry = self.pending.get(labels)
        if entry is None:
            entry = self.pending[labels] = [0.0] * (len(self.bounds) + 1)
        entry[0] += total
        entry[bucket + 1] += count

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, entry in pending.items():
            child: Any = self.metric.labels(*labels)
            # Histogram.observe() adds one observation; these are the values it adds to.
            child._sum.inc(entry[0])
            for bucket, count in zip(child._buckets, entry[1:], strict=True):
                if count:
                    bucket.inc(count)


requests_counted = BatchedCounter(http_requests_total)
request_durations = BatchedHistogram(http_request_duration_seconds, LATENCY_BUCKETS)
queries_counted = BatchedCounter(db_queries_total)
reads_routed = BatchedCounter(db_reads_total)  # only counts with replicas configured
query_durations = BatchedHistogram(db_query_duration_seconds, QUERY_BUCKETS)
# Requests this worker is serving: their scopes, keyed by their stats (hashed by identity,
# cheaper than a call to id()). Counted by route at each flush, since the route is only
# known once the router has matched it (FastAPI resolves included routers lazily, so there
# is no route app to wrap).
in_flight: dict[RequestStats, Mapping[str, Any]] = {}
_in_progress_labels: set[tuple[str, str]] = set()


def _count_in_progress() -> None:
    global _in_progress_labels
    counts: dict[tuple[str, str], int] = {}
    for scope in list(in_flight.values()):
        key = (method_of(scope), route_of(scope))
        counts[key] = counts.get(key, 0) + 1
    for key in _in_progress_labels - counts.keys():
        http_requests_in_progress.labels(*key).set(0)
    for key, count in counts.items():
        http_requests_in_progress.labels(*key).set(count)
    _in_progress_labels = set(counts) | _in_progress_labels


def count_served(batch: list[RequestStats]) -> None:
    """Count served requests, from their records (see RequestStats), in the request metrics."""
    # Durations gathered by everything a request's series depend on first, one append per
    # request; then each distinct key once into the counter and the histogram (a batch has
    # a few dozen), its durations sorted and split at the buckets' bounds by a search per
    # bound, rather than a search per request (the batches' cost shows in
    # benchmarks/bench_observability.py).
    durations: dict[tuple[str, str, int], list[float]] = {}
    for stats in batch:
        key = (stats.method, stats.route, stats.status)
        same = durations.get(key)
        if same is None:
            durations[key] = [stats.duration]
        else:
            same.append(stats.duration)
    bounds = request_durations.bounds
    for (method, route, status), seconds in durations.items():
        requests_counted.inc((method, route, str(status)), len(seconds))
        seconds.sort()
        labels = (method, route)
        below = 0
        for bucket, bound in enumerate(bounds):
            # As BatchedHistogram.observe picks a bucket: the first bound >= the value.
            upto = bisect.bisect_right(seconds, bound, below)
            if upto > below:
                request_durations.add(labels, bucket, upto - below, sum(seconds[below:upto]))
                below = upto
                if below == len(seconds):
                    break


def flush() -> None:
    """Fold this worker's tallies into the registry (an app hands its served requests on
    first: Observability.flush_metrics)."""
    requests_counted.flush()
    request_durations.flush()
    queries_counted.flush()
    query_durations.flush()
    reads_routed.flush()
    for counter in (*_CACHE_COUNTERS.values(), _cache_loads):
        counter.flush()
    _count_in_progress()


# --- cache ------------------------------------------------------------------------------

_CACHE_COUNTERS = {
    "hit": BatchedCounter(cache_hits_total),
    "miss": BatchedCounter(cache_misses_total),
    "invalidation": BatchedCounter(cache_invalidations_total),
}
_cache_loads = BatchedCounter(cache_loads_total)


def cache_event(cache: str, tier: str, event: str) -> None:
    """Count a cache hit, miss, load or invalidation (see the module docstring)."""
    if event == "load":
        _cache_loads.inc((cache,))
        return
    _CACHE_COUNTERS[event].inc((cache, tier))
    stats = current_request.get()
    if stats is not None:
        if event == "hit":
            stats.cache_hits += 1
        elif event == "miss":
            stats.cache_misses += 1


# --- per-process figures ----------------------------------------------------------------

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident_memory_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except OSError:  # not Linux: peak rather than current, in KiB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sample_process(pools: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Refresh this worker's CPU and memory, and its pools' (checked_out, size, overflow)."""
    pid = str(os.getpid())
    times = os.times()
    worker_cpu_seconds_total.labels(pid).set(times.user + times.system)
    worker_resident_memory_bytes.labels(pid).set(_resident_memory_bytes())
    for pool, (checked_out, size, overflow) in (pools or {}).items():
        db_pool_connections.labels(pool, "checked_out").set(checked_out)
        db_pool_connections.labels(pool, "size").set(size)
        db_pool_connections.labels(pool, "overflow").set(overflow)


# --- exposition -------------------------------------------------------------------------

_DB_FILE = re.compile(r"^(?P<kind>[a-z]+(?:_[a-z]+)?)_(?P<pid>\d+)\.db$")
# Dead workers' samples of these kinds keep counting; gauges of other modes die with them.
_ARCHIVED_KINDS = ("counter", "histogram", "summary", "gauge_sum")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    with open(os.path.join(directory, "reap.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reap_dead_workers(directory: str) -> list[int]:
    """Fold the files of workers that have exited into archive files; return their pids."""
    dead: dict[int, list[tuple[str, str]]] = {}
    for name in os.listdir(directory):
        match = _DB_FILE.match(name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _alive(pid):
            dead.setdefault(pid, []).append((match["kind"], name))
    if not dead:
        return []
    with _locked(directory):
        for pid, files in dead.items():
            for kind, name in files:
                path = os.path.join(directory, name)
                if not os.path.exists(path):  # another worker reaped it first
                    continue
                if kind in _ARCHIVED_KINDS:
                    _fold_into_archive(path, os.path.join(directory, f"{kind}_archive.db"))
                    os.unlink(path)
            # live* gauges; other gauge modes of a dead pid are dropped with it too.
            _multiprocess.mark_process_dead(pid, directory)
            for _kind, name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
    return sorted(dead)


def _fold_into_archive(source: str, archive: str) -> None:
    target = _mmap_dict.MmapedDict(archive)
    try:
        for key, value, timestamp, _ in _mmap_dict.MmapedDict.read_all_values_from_file(source):
            current, _ = target.read_value(key)
            target.write_value(key, current + value, timestamp)
    finally:
        target.close()


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every worker's samples when multiprocess (the files of exited
    workers reaped first), this process's otherwise."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    reap_dead_workers(directory)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=directory)
    return registry


def render() -> bytes:
    """The exposition text for a scrape: every worker's samples when multiprocess."""
    return generate_latest(scrape_registry())


def samples_by_worker() -> dict[str, list[Metric]]:
    """Each worker's own samples, by pid, from the files a scrape reads; under "exited",
    what the workers reaped so far left in the archive files. This process alone, by its
    pid, when not multiprocess."""
    directory = multiprocess_dir()
    if directory is None:
        return {str(os.getpid()): list(REGISTRY.collect())}
    files: dict[str, list[str]] = {}
    for name in sorted(os.listdir(directory)):
        match = _DB_FILE.match(name)
        if match is not None:
            files.setdefault(match["pid"], []).append(os.path.join(directory, name))
        elif name.endswith("_archive.db"):
            files.setdefault("exited", []).append(os.path.join(directory, name))
    merged: dict[str, list[Metric]] = {}
    for worker, paths in files.items():
        try:
            merged[worker] = list(_multiprocess.MultiProcessCollector.merge(paths))
        except FileNotFoundError:  # reaped between the listing and the read: it exited
            continue
    return merged


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the Prometheus exposition of every worker."""
    request.app.state.observability.flush_metrics()
    sample_process(request.app.state.db.pool_usage())
    return Response(render(), media_type=CONTENT_TYPE)


async def flush_and_sample_forever(
    flush: Callable[[], None],
    pools: Callable[[], dict[str, tuple[int, int, int]]],
    *,
    flush_interval: float,
    sample_interval: float,
) -> None:
    """Flush this worker's tallies with `flush` (an app's Observability.flush_metrics)
    every `flush_interval` seconds and refresh its process and pool gauges every
    `sample_interval`: the worker that answers a scrape can only flush and sample itself."""
    sampled_at = -sample_interval
    loop = asyncio.get_running_loop()
    try:
        while True:
            flush()
            if loop.time() - sampled_at >= sample_interval:
                sample_process(pools())
                sampled_at = loop.time()
            await asyncio.sleep(flush_interval)
    finally:
        flush()
