"""`fastpost db top`: the statements the database spends its time on.

Ranked by total time, calls, mean time or rows. On PostgreSQL the figures are the server's
own (`pg_stat_statements`: every client of the database since the statistics were last
reset). On SQLite there is no such view: the figures are fastpost's own statement metrics
(`db_queries_total`, `db_query_duration_seconds`, which fastpost.observability.statements
records for every statement), read from the prometheus_client multiprocess folder of the
`fastpost serve` that wrote them; those are labelled by kind of statement, not by text,
and count no rows.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastpost.settings import Settings

ENABLE_PG_STAT_STATEMENTS = """\
pg_stat_statements is not enabled on this server ({missing}). To enable it:
  1. in postgresql.conf{config_file}:
       shared_preload_libraries = 'pg_stat_statements'
     (add it to the list if the setting already names other libraries)
  2. restart PostgreSQL (a reload is not enough for shared_preload_libraries)
  3. in the database fastpost uses ({database}):
       CREATE EXTENSION pg_stat_statements;
Then run `fastpost db top` again."""


class Order(StrEnum):
    total = "total"
    calls = "calls"
    mean = "mean"
    rows = "rows"


@dataclass(frozen=True, slots=True)
class StatementFigures:
    statement: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int | None  # None: the source does not count rows


@dataclass(frozen=True, slots=True)
class TopStatements:
    source: str  # where the figures come from, said above the table
    statements: list[StatementFigures]


class StatementStatsUnavailable(Exception):
    """No statement statistics to show; the message says what to do."""


_PG_ORDER = {
    Order.total: "total_exec_time",
    Order.calls: "calls",
    Order.mean: "mean_exec_time",
    Order.rows: "rows",
}


def _preloaded(libraries: str) -> bool:
    names = (name.strip().strip("'\"") for name in libraries.split(","))
    return "pg_stat_statements" in names


async def top_from_pg_stat_statements(
    settings: Settings, *, limit: int, order: Order
) -> TopStatements:
    """The database's own statement statistics, for the database fastpost uses."""
    from sqlalchemy import text

    from fastpost.db import Database

    db = Database(settings.db)
    try:
        async with db.reader() as conn:
            libraries = str(await conn.scalar(text("SHOW shared_preload_libraries")) or "")
            installed = await conn.scalar(
                text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            )
            database = str(await conn.scalar(text("SELECT current_database()")))
            missing = []
            if not _preloaded(libraries):
                missing.append("not in shared_preload_libraries")
            if installed is None:
                missing.append(f"no CREATE EXTENSION in database {database}")
            if missing:
                config_file = ""
                # Readable by superusers and pg_read_all_settings only; on this autocommit
                # connection a refusal leaves no transaction to undo.
                with contextlib.suppress(Exception):
                    config_file = f" ({await conn.scalar(text('SHOW config_file'))})"
                raise StatementStatsUnavailable(
                    ENABLE_PG_STAT_STATEMENTS.format(
                        missing="; ".join(missing), config_file=config_file, database=database
                    )
                )
            result = await conn.execute(
                text(
                    "SELECT query, calls, total_exec_time, mean_exec_time, rows "
                    "FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " AND query NOT LIKE '%pg_stat_statements%' "
                    f"ORDER BY {_PG_ORDER[order]} DESC LIMIT :limit"
                ),
                {"limit": limit},
            )
            statements = [
                StatementFigures(
                    statement=row.query,
                    calls=int(row.calls),
                    total_ms=float(row.total_exec_time),
                    mean_ms=float(row.mean_exec_time),
                    rows=int(row.rows),
                )
                for row in result
            ]
    finally:
        await db.dispose()
    return TopStatements(
        f"pg_stat_statements in database {database}: every client's statements since the "
        "statistics were last reset (SELECT pg_stat_statements_reset() starts afresh)",
        statements,
    )


def metrics_folder(settings: Settings, environ: Mapping[str, str]) -> Path:
    """The multiprocess folder `fastpost serve` writes its metrics to, with these settings
    (the same choice as the command's: PROMETHEUS_MULTIPROC_DIR, then the setting, then
    DATA_DIR/metrics); a second server beside a running one writes to a serve-PID folder
    inside it, and the newest of those is taken when the folder itself holds no samples."""
    named = environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.observability.metrics_dir
    folder = Path(named or settings.data_dir / "metrics")
    if not any(folder.glob("*.db")):
        others = sorted(
            (p for p in folder.glob("serve-*") if any(p.glob("*.db"))),
            key=lambda p: p.stat().st_mtime,
        )
        if others:
            return others[-1]
    return folder


def top_from_metrics(folder: Path, *, limit: int, order: Order) -> TopStatements:
    """fastpost's own statement metrics, by kind of statement, from a multiprocess folder."""
    if not any(folder.glob("*.db")):
        raise StatementStatsUnavailable(
            f"no statement metrics in {folder}: SQLite has no statement statistics of its "
            "own, so `fastpost db top` reads fastpost's metrics, which `fastpost serve` "
            "writes there. Start the server, send it requests, and run this again (with the "
            "same FASTPOST_DATA_DIR, or FASTPOST_OBSERVABILITY__METRICS_DIR)."
        )
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    collector: Any = multiprocess.MultiProcessCollector  # untyped
    collector(registry, path=str(folder))
    calls: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            operation = sample.labels.get("operation")
            if operation is None:
                continue
            if sample.name == "db_queries_total":
                calls[operation] = calls.get(operation, 0) + sample.value
            elif sample.name == "db_query_duration_seconds_sum":
                seconds[operation] = seconds.get(operation, 0) + sample.value
    statements = [
        StatementFigures(
            statement=f"{operation.upper()} (every statement of this kind)",
            calls=int(count),
            total_ms=seconds.get(operation, 0.0) * 1000,
            mean_ms=seconds.get(operation, 0.0) * 1000 / count if count else 0.0,
            rows=None,
        )
        for operation, count in calls.items()
    ]
    key = {
        Order.total: lambda s: s.total_ms,
        Order.calls: lambda s: float(s.calls),
        Order.mean: lambda s: s.mean_ms,
        Order.rows: lambda s: float(s.rows or 0),
    }[order]
    statements.sort(key=key, reverse=True)
    return TopStatements(
        f"fastpost's own metrics (db_queries_total, db_query_duration_seconds) in {folder}: "
        "SQLite keeps no statement statistics; these are by kind of statement, since that "
        "server started, and count no rows",
        statements[:limit],
    )


# A select list longer than this is shown as `…`: the tables and conditions after it are
# what tell one statement from another.
_LONGEST_SELECT_LIST = 40


def _top_level_from(line: str, start: int) -> int:
    """Where the outermost ` FROM ` after `start` begins (not a subquery's), or -1."""
    depth = 0
    upper = line.upper()
    for i in range(start, len(line)):
        char = line[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and upper.startswith(" FROM ", i):
            return i
    return -1


def one_line(text: str, width: int) -> str:
    """`text` on one line, whitespace collapsed, a long select list shortened to `…`, cut
    to `width` characters."""
    line = " ".join(text.split())
    if line[:7].upper() == "SELECT ":
        end = _top_level_from(line, 7)
        if end - 7 > _LONGEST_SELECT_LIST:
            line = f"SELECT …{line[end:]}"
    return line if len(line) <= width else line[: max(width - 1, 1)] + "…"


def render_top(report: TopStatements, *, width: int = 120) -> str:
    """An aligned table: calls, total, mean, rows, then the statement on one line."""
    header = ("calls", "total ms", "mean ms", "rows")
    cells = [
        (
            f"{s.calls:,}",
            f"{s.total_ms:,.2f}",
            f"{s.mean_ms:,.3f}",
            "-" if s.rows is None else f"{s.rows:,}",
        )
        for s in report.statements
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    fixed = sum(widths) + 2 * len(widths)
    lines = [report.source, ""]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + "  statement")
    for figures, row in zip(report.statements, cells, strict=True):
        numbers = "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
        lines.append(f"{numbers}  {one_line(figures.statement, max(width - fixed, 30))}")
    if not report.statements:
        lines.append("(no statements recorded yet)")
    return "\n".join(lines)


def terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns
