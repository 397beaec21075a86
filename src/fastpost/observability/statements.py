"""The statements the database ran: the statement log, the per-request query count and
time, the N+1 detector, the slow query log.

The one recorder of statements, in two steps:
- as a statement is sent, it joins the statement log of the context, if someone listens
  (`record_statements`: tests count a request's statements with it, the lab its
  experiments'); a statement that fails is in it too;
- as it returns, `StatementRecorder.record` counts it for the metrics and the current
  request, and hands it to its app's hooks (tracing) and slow query log.
`fastpost.db` and `fastpost.writes` do both for every statement (the SQLAlchemy cursor
listeners, the lean read path, the write programs), with the recorder of their Database: its
app's (create_app passes it), or one of its own.

The observability layer opens a `RequestStats` per request and reads it back for the access
log, `Server-Timing` and the N+1 check. Statements are counted by their text, which is
already a shape (values are bound parameters); they are normalised only when the request
ends, and only when one text repeats, so the hot path is a dict increment.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from fastpost.observability.metrics import queries_counted, query_durations
from fastpost.observability.request_stats import RequestStats, current_request

# --- the statement log ------------------------------------------------------------------

# Statements sent to the database in the current context (and tasks it spawns), when
# someone listens. Per context, so two apps (or two tests) never share one. Read inline
# (`sent_statements.get()`) on the hot paths of fastpost.db: no call when nobody listens.
sent_statements: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fastpost_statement_log", default=None
)


@contextmanager
def record_statements() -> Iterator[list[str]]:
    """Collect every SQL statement sent in this context (and tasks it spawns)."""
    log: list[str] = []
    token = sent_statements.set(log)
    try:
        yield log
    finally:
        sent_statements.reset(token)


# --- per statement ----------------------------------------------------------------------

_OPERATIONS = frozenset({"select", "insert", "update", "delete", "with", "begin", "commit"})
# A memo of a pure function of the statement's text: shared by every app of the process.
_operation_of: dict[str, str] = {}
# Statement texts are finite (compiled once per shape), but expanding IN lists are not.
_MAX_REMEMBERED = 4096


def _operation(statement: str) -> str:
    operation = _operation_of.get(statement)
    if operation is None:
        word = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
        operation = "select" if word == "with" else word if word in _OPERATIONS else "other"
        if len(_operation_of) < _MAX_REMEMBERED:
            _operation_of[statement] = operation
    return operation


@dataclass(frozen=True, slots=True)
class SlowQueryLog:
    """Statements slower than `threshold_seconds` are logged; `explain` gives their plan."""

    threshold_seconds: float
    explain: Callable[[str, Sequence[Any]], Awaitable[str | None]] | None = None


_log = structlog.get_logger("fastpost.db")


class StatementRecorder:
    """Records each statement an app's database ran (see the module)."""

    def __init__(self) -> None:
        # Set by the app's lifespan with FASTPOST_OBSERVABILITY__SLOW_QUERY_MS.
        self.slow_query_log: SlowQueryLog | None = None
        # Called with (statement, seconds, parameters) for every statement: tracing adds a
        # span maker, `fastpost db explain` a collector.
        self.hooks: list[Callable[[str, float, Any], None]] = []
        self._explaining: set[asyncio.Task[None]] = set()

    def record(self, statement: str, seconds: float, parameters: Any = None) -> None:
        """Count one executed statement for the metrics and the current request."""
        labels = (_operation(statement),)
        queries_counted.inc(labels)
        query_durations.observe(labels, seconds)
        stats = current_request.get()
        if stats is not None:
            stats.db_queries += 1
            stats.db_seconds += seconds
            counts = stats.statements
            if counts is None:
                counts = stats.statements = {}
            counts[statement] = counts.get(statement, 0) + 1
        for hook in self.hooks:
            hook(statement, seconds, parameters)
        slow = self.slow_query_log
        if slow is not None and seconds >= slow.threshold_seconds:
            self._log_slow(slow, statement, seconds, parameters)

    def _log_slow(
        self, slow: SlowQueryLog, statement: str, seconds: float, parameters: Any
    ) -> None:
        # Parameters are never logged (they hold emails and password hashes); they only feed
        # EXPLAIN, which plans without running the statement.
        if slow.explain is None or operation_is_transaction_control(statement):
            _log.warning("slow query", duration_ms=round(seconds * 1000, 2), statement=statement)
            return
        args = list(parameters) if isinstance(parameters, list | tuple) else []
        explain = slow.explain

        async def explain_and_log() -> None:
            try:
                plan = await explain(statement, args)
            except Exception as exc:  # a plan is a courtesy; the warning is not
                plan = f"EXPLAIN failed: {exc!r}"
            _log.warning(
                "slow query",
                duration_ms=round(seconds * 1000, 2),
                statement=statement,
                plan=plan,
            )

        task = asyncio.get_running_loop().create_task(explain_and_log())
        self._explaining.add(task)
        task.add_done_callback(self._explaining.discard)

    async def wait_for_explains(self) -> None:
        """Let pending EXPLAINs finish (tests, shutdown)."""
        while self._explaining:
            await asyncio.gather(*list(self._explaining), return_exceptions=True)


def operation_is_transaction_control(statement: str) -> bool:
    return _operation(statement) in ("begin", "commit", "other")


# --- N+1 --------------------------------------------------------------------------------

_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+\b|\$\d+|\?|%\([^)]*\)s|:\w+")
_LISTS = re.compile(r"\((?:\s*\?\s*,)+\s*\?\s*\)")


def normalise(statement: str) -> str:
    """The shape of a statement: literals and parameters become `?`, lists of them `(?)`."""
    return " ".join(_LISTS.sub("(?)", _LITERALS.sub("?", statement)).split())


@dataclass(frozen=True, slots=True)
class RepeatedQuery:
    route: str
    statement: str
    count: int


# Tests register a list here (tests/conftest.py) and fail when a request lands in it.
# Process-wide on purpose, like the warning itself (structlog's output is the process's): a
# test watches every app it builds, whether served in its own task or in a server's thread.
n_plus_one_sinks: list[list[RepeatedQuery]] = []


def find_repeated_queries(stats: RequestStats, threshold: int) -> list[tuple[str, int]]:
    """Statement shapes run more than `threshold` times in one request."""
    if stats.db_queries <= threshold:
        return []
    shapes: dict[str, int] = {}
    for statement, count in (stats.statements or {}).items():
        if _operation(statement) in ("begin", "commit"):
            continue
        shape = normalise(statement)
        shapes[shape] = shapes.get(shape, 0) + count
    return [(shape, count) for shape, count in shapes.items() if count > threshold]


def check_n_plus_one(stats: RequestStats, route: str, threshold: int) -> None:
    """Warn about each statement shape that one request repeated more than `threshold` times."""
    for shape, count in find_repeated_queries(stats, threshold):
        _log.warning("n+1 query", route=route, statement=shape, count=count)
        for sink in n_plus_one_sinks:
            sink.append(RepeatedQuery(route, shape, count))


@contextmanager
def collect_n_plus_one() -> Iterator[list[RepeatedQuery]]:
    """Collect every N+1 detection made while the block runs."""
    found: list[RepeatedQuery] = []
    n_plus_one_sinks.append(found)
    try:
        yield found
    finally:
        n_plus_one_sinks.remove(found)
