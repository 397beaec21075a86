"""Per-route rows of a run, in one shape for both generators, and the error arithmetic.

A row: route, requests attempted, its share of the run, req/s, p50/p95/p99/max (ms),
errors by type and the error rate. Errors by type are `timeout` (no answer in time),
`socket` (`connect`, `read`, `write`: the connection failed) and `status` (an answer
outside 2xx/3xx, by code). The error rate is errors / requests attempted, everywhere.

The fixed-rate generator knows each request's route and fate. wrk's Lua (lua/requests.lua)
sees each answer's route and status, but wrk keeps its socket errors and timeouts per
thread, not per request: a wrk row's `timeout` and `socket` are None, and they are counted
in the run's total row only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from fastpost.bench.latency import Sample, is_error, percentile
from fastpost.bench.wrk import WrkRun

SOCKET_ERRORS = ("connect", "read", "write")


def error_count(errors: dict[str, Any]) -> int:
    """Add up an errors-by-type dict (None counts as 0)."""
    socket: dict[str, int] = errors.get("socket") or {}
    status: dict[str, int] = errors["status"]
    timeout: int = errors.get("timeout") or 0
    return timeout + sum(socket.values()) + sum(status.values())


def describe_errors(errors: dict[str, Any]) -> str:
    """Say an errors-by-type dict in a few words: `status 500: 3, timeout: 1`, or `0`."""
    parts = [f"status {code}: {n:,}" for code, n in errors["status"].items()]
    if errors.get("timeout"):
        parts.append(f"timeout: {errors['timeout']:,}")
    parts += [f"{kind}: {n:,}" for kind, n in (errors.get("socket") or {}).items() if n]
    return ", ".join(parts) or "0"


def _row(
    route: str,
    attempted: int,
    share: float,
    rps: float,
    latencies_ms: dict[str, float | None],
    errors: dict[str, Any],
) -> dict[str, Any]:
    count = error_count(errors)
    return {
        "route": route,
        "attempted": attempted,
        # Of the requests sent: the mix as realised.
        "share": share,
        "rps": rps,
        **latencies_ms,
        "errors": errors,
        "error_count": count,
        "error_rate": count / attempted if attempted else 0.0,
    }


def fixed_rate_rows(samples: Sequence[Sample], elapsed_s: float) -> list[dict[str, Any]]:
    """Rows of a fixed-rate run: every scheduled request was attempted; req/s is answers."""
    by_route: dict[str, list[Sample]] = {}
    for sample in samples:
        by_route.setdefault(sample.route or "?", []).append(sample)
    rows = []
    for route, group in by_route.items():
        values = sorted(s.latency_s * 1000 for s in group)
        kinds = Counter(s.error for s in group if s.error)
        statuses = Counter(s.status for s in group if s.status and is_error(s.status))
        errors = {
            "timeout": kinds["timeout"],
            "socket": {kind: kinds[kind] for kind in SOCKET_ERRORS},
            "status": {str(code): n for code, n in sorted(statuses.items())},
        }
        rows.append(
            _row(
                route,
                len(group),
                len(group) / len(samples),
                sum(1 for s in group if s.status) / elapsed_s if elapsed_s else 0.0,
                {
                    "p50_ms": percentile(values, 50),
                    "p95_ms": percentile(values, 95),
                    "p99_ms": percentile(values, 99),
                    "max_ms": values[-1],
                },
                errors,
            )
        )
    return sorted(rows, key=lambda r: (-r["attempted"], r["route"]))


def wrk_rows(run: WrkRun) -> list[dict[str, Any]]:
    """Rows of a wrk run from its per-route figures: attempted = answered (as in the run's
    total); share = of the requests sent (answered, or still out when wrk stopped); req/s =
    the run's req/s in the route's share of the answers."""
    answered = sum(r.requests for r in run.routes)
    sent = answered + sum(r.unanswered for r in run.routes)
    return [
        _row(
            figures.route,
            figures.requests,
            (figures.requests + figures.unanswered) / sent if sent else 0.0,
            run.rps * figures.requests / answered if answered else 0.0,
            {
                "p50_ms": figures.percentiles_ms.get("p50"),
                "p95_ms": figures.percentiles_ms.get("p95"),
                "p99_ms": figures.percentiles_ms.get("p99"),
                "max_ms": figures.max_ms,
            },
            {
                "timeout": None,
                "socket": None,
                "status": {str(code): n for code, n in figures.status_errors.items()},
            },
        )
        for figures in run.routes
    ]


def wrk_total_errors(run: WrkRun) -> dict[str, Any]:
    """The whole wrk run's errors by type: statuses from the Lua's per-route counts (wrk's
    own "Non-2xx or 3xx" counts only codes above 399), socket errors and timeouts from wrk."""
    statuses: Counter[int] = Counter()
    for figures in run.routes:
        statuses.update(figures.status_errors)
    status = (
        {str(code): n for code, n in sorted(statuses.items())}
        if run.routes
        else ({"non-2xx/3xx": run.non_2xx} if run.non_2xx else {})
    )
    return {
        "timeout": run.timeouts,
        "socket": {
            "connect": run.connect_errors,
            "read": run.read_errors,
            "write": run.write_errors,
        },
        "status": status,
    }
